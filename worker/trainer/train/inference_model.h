// A model directory (plain Hugging Face weights or a bitsandbytes 4-bit checkpoint) with an
// optional PEFT LoRA adapter on top, for evaluation and export: the adapter's own
// adapter_config.json decides r, alpha and target modules. With `quantize`, the decoder
// projections of a 16-bit directory are quantized to NF4 as they load (as training does). `task`:
// which adapters are accepted (a classification one's score head is left to the caller).
#pragma once

#include <optional>
#include <string>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/model/llama_model.h"
#include "worker/trainer/model/model_loader.h"

namespace qlorad::trainer {

StatusOr<LlamaModel> LoadModelForInference(const std::string& model_dir,
                                           const std::optional<std::string>& adapter_dir,
                                           at::Device device, at::ScalarType dtype,
                                           std::optional<QuantizeOnLoad> quantize = std::nullopt,
                                           Task task = Task::kCausalLm);

}  // namespace qlorad::trainer
