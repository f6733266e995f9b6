// Loads the Llama of a model directory: plain Hugging Face weights, or a bitsandbytes 4-bit
// model directory whose quantized projections are used as stored (see
// weights/bnb4bit_reader.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "kernels/torch/nf4_ops.h"
#include "worker/trainer/model/llama_model.h"
#include "worker/trainer/model/model_config.h"

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

// Where each decoder projection's frozen weight goes as it loads, when not into the model: fsdp's
// sharded load keeps only this rank's shard (parallel/shard_on_load.h). The loader hands every
// projection to the sink, on the model's device and after quantizing it (so the blocks are those
// of the whole weight); the model then holds a placeholder of the weight's shape and one element.
class FrozenWeightSink {
 public:
  virtual ~FrozenWeightSink() = default;
  // `module`: "model.layers.0.self_attn.q_proj".
  virtual void TakeNF4(const std::string& module, const ops::NF4Weight& weight) = 0;
  // `weight` [out, in] in the model's dtype (quantization none).
  virtual void TakeDense(const std::string& module, const at::Tensor& weight) = 0;
};

// With `prequantized`, each projection that has a bitsandbytes quant_state becomes its stored NF4
// weight (never a dense copy); every other tensor loads as usual. With `quantize`, every other
// decoder projection is quantized the moment it is read, so the device never holds more than one
// dense projection: the load peaks near the NF4 model, not the dense one (a 70B model's bf16
// weights are 140 GB, its NF4 ones 35 GB). The result equals loading dense, then QuantizeNF4.
// With `sink`, every decoder projection's frozen weight goes there instead of into the model.
StatusOr<LoadedModel> LoadLlamaModel(const std::string& model_dir, const LlamaConfig& config,
                                     bool prequantized, at::Device device, at::ScalarType dtype,
                                     std::optional<QuantizeOnLoad> quantize = std::nullopt,
                                     FrozenWeightSink* sink = nullptr);

}  // namespace qlorad::trainer
