// The PEFT adapter format: adapter_config.json + adapter_model.safetensors with keys
// "base_model.model.<module>.lora_A.weight" [r, in] and "...lora_B.weight" [out, r] in fp32,
// which peft.PeftModel.from_pretrained loads. A classification adapter (PEFT's SEQ_CLS) adds the
// score head whole, "base_model.model.score.weight" [num_labels, hidden].
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/model/llama_model.h"

namespace qlorad::trainer {

std::string AdapterKey(const std::string& module_name, bool lora_a);
// A module trained whole (PEFT's modules_to_save, e.g. "score"): "base_model.model.score.weight".
std::string WholeModuleKey(const std::string& module_name);

// task: classification's head, as PEFT's SEQ_CLS adapters name it; the adapter directory also
// holds kLabelsFile: {"num_labels", "id2label", "label2id", "label_field"}.
inline constexpr const char* kScoreModule = "score";
inline constexpr const char* kLabelsFile = "labels.json";

// transformers' label fields for `labels` in class order: {"num_labels", "id2label" (ids as
// strings), "label2id"}, as labels.json and a sequence-classification config.json hold them.
nlohmann::json LabelFieldsJson(const std::vector<std::string>& labels);

// Writes the adapter of `model` into `dir` (created if needed).
Status SaveAdapter(const LlamaModel& model, const JobSpec& spec, const std::string& dir);
// The same from tensors already keyed by AdapterKey (gathered from ranks, see parallel/).
Status SaveAdapterTensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                          const JobSpec& spec, const std::string& dir);

// The LoRA settings of a PEFT adapter_config.json (r, lora_alpha, use_rslora, lora_dropout,
// target_modules as a list or "all-linear"). Settings this trainer cannot reproduce (DoRA,
// per-module rank/alpha patterns, trained biases, modules_to_save, fan_in_fan_out,
// layers_to_transform) are refused naming the file and the field.
// A classification adapter (task_type SEQ_CLS, "score" in modules_to_save) is read only for
// `task` classification, any other only for causal_lm.
StatusOr<LoraSpec> ReadAdapterConfig(const std::string& dir, Task task = Task::kCausalLm);
// The task an adapter was trained for: classification for PEFT's task_type SEQ_CLS, else
// causal_lm (errors name adapter_config.json).
StatusOr<Task> ReadAdapterTask(const std::string& dir);

// Copies adapter weights from `dir` into the model's LoRA parameters. Keys may carry PEFT's
// adapter name (".lora_A.default.weight") or not; any float dtype. Every adapted layer must be
// present with matching shapes, every LoRA tensor in the file must belong to an adapted layer,
// and when adapter_config.json is there its scale must match the model's (errors name the file
// and the key).
Status LoadAdapter(LlamaModel& model, const std::string& dir);

}  // namespace qlorad::trainer
