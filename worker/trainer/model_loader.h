// Loads the Llama of a model directory: plain Hugging Face weights, or a bitsandbytes 4-bit
// checkpoint whose quantized projections are used as stored (see bnb_checkpoint.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "worker/trainer/llama_model.h"
#include "worker/trainer/model_config.h"

namespace qlorad::trainer {

struct LoadedModel {
  LlamaModel model{nullptr};
  int64_t prequantized_layers = 0;  // projections that came in NF4 from the checkpoint
};

// Quantize the decoder projections to NF4 as they load (quantization.type nf4).
struct QuantizeOnLoad {
  int64_t block_size = 64;
  bool double_quant = true;
};

// With `prequantized`, each projection that has a bitsandbytes quant_state becomes its stored NF4
// weight (never a dense copy); every other tensor loads as usual. With `quantize`, every other
// decoder projection is quantized the moment it is read, so the device never holds more than one
// dense projection: the load peaks near the NF4 model, not the dense one (a 70B model's bf16
// weights are 140 GB, its NF4 ones 35 GB). The result equals loading dense, then QuantizeNF4.
StatusOr<LoadedModel> LoadLlamaModel(const std::string& model_dir, const LlamaConfig& config,
                                     bool prequantized, at::Device device, at::ScalarType dtype,
                                     std::optional<QuantizeOnLoad> quantize = std::nullopt);

}  // namespace qlorad::trainer
