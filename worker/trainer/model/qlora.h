// Turns a loaded Llama into a QLoRA model, in a fixed order: (1) quantize the frozen projections
// to NF4 (if asked), (2) attach LoRA adapters to the target modules, drawing A in the model's
// module order from one generator seeded with train.seed. Everything else stays frozen.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/model/llama_model.h"

namespace qlorad::trainer {

struct QLoraSummary {
  int64_t quantized_layers = 0;
  int64_t lora_layers = 0;
  int64_t trainable_parameters = 0;
};

// Errors name the field: an unknown lora.target_modules entry, quantization without the ops
// library. The adapters compute in `lora_compute_dtype` (lora.compute_precision).
StatusOr<QLoraSummary> ApplyQLora(LlamaModel& model, const QuantizationSpec& quantization,
                                  const LoraSpec& lora, uint64_t seed,
                                  at::ScalarType lora_compute_dtype = at::kFloat);

// The trainable parameters (A then B of each adapted layer, in module order, lm_head last).
std::vector<at::Tensor> LoraParameters(const LlamaModel& model);

}  // namespace qlorad::trainer
