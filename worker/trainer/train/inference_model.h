// A model directory (plain Hugging Face weights or a bitsandbytes 4-bit checkpoint) with an
// optional PEFT LoRA adapter on top, for evaluation and export: the adapter's own
// adapter_config.json decides r, alpha and target modules.
#pragma once

#include <optional>
#include <string>

#include "common/status.h"
#include "worker/trainer/model/llama_model.h"

namespace qlorad::trainer {

StatusOr<LlamaModel> LoadModelForInference(const std::string& model_dir,
                                           const std::optional<std::string>& adapter_dir,
                                           at::Device device, at::ScalarType dtype);

}  // namespace qlorad::trainer
