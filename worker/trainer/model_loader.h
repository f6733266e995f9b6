// Loads the Llama of a model directory: plain Hugging Face weights, or a bitsandbytes 4-bit
// checkpoint whose quantized projections are used as stored (see bnb_checkpoint.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "common/status.h"
#include "worker/trainer/llama_model.h"
#include "worker/trainer/model_config.h"

namespace qlorad::trainer {

struct LoadedModel {
  LlamaModel model{nullptr};
  int64_t prequantized_layers = 0;  // projections that came in NF4 from the checkpoint
};

// With `prequantized`, each projection that has a bitsandbytes quant_state becomes its stored NF4
// weight (never a dense copy); every other tensor loads as usual.
StatusOr<LoadedModel> LoadLlamaModel(const std::string& model_dir, const LlamaConfig& config,
                                     bool prequantized, at::Device device, at::ScalarType dtype);

}  // namespace qlorad::trainer
