#include "worker/trainer/model/adapter.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "worker/trainer/io/json_file.h"
#include "worker/trainer/weights/safetensors_torch.h"

namespace qlorad::trainer {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// PEFT writes lora_alpha as an integer; keep that form whenever the value is one.
json LoraAlphaJson(double alpha) {
  return alpha == std::floor(alpha) ? json(static_cast<int64_t>(alpha)) : json(alpha);
}

}  // namespace

std::string AdapterKey(const std::string& module_name, bool lora_a) {
  return "base_model.model." + module_name + (lora_a ? ".lora_A.weight" : ".lora_B.weight");
}

std::string WholeModuleKey(const std::string& module_name) {
  return "base_model.model." + module_name + ".weight";
}

Status SaveAdapter(const LlamaModel& model, const JobSpec& spec, const std::string& dir) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, linear] : model->NamedLoraTargets()) {
    if (!linear->has_lora()) continue;
    tensors.emplace_back(AdapterKey(name, true), linear->lora_a().to(at::kFloat));
    tensors.emplace_back(AdapterKey(name, false), linear->lora_b().to(at::kFloat));
  }
  return SaveAdapterTensors(tensors, spec, dir);
}

json LabelFieldsJson(const std::vector<std::string>& labels) {
  json id2label = json::object(), label2id = json::object();
  for (size_t i = 0; i < labels.size(); ++i) {
    id2label[std::to_string(i)] = labels[i];
    label2id[labels[i]] = i;
  }
  return {{"num_labels", labels.size()}, {"id2label", id2label}, {"label2id", label2id}};
}

Status SaveAdapterTensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                          const JobSpec& spec, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Internal(dir + ": cannot create directory: " + ec.message());
  QLORAD_RETURN_IF_ERROR(
      SaveTensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}}));
  const bool classification = spec.task == Task::kClassification;
  if (classification) {
    // transformers' config fields, so the base loads as AutoModelForSequenceClassification with
    // AutoModelForSequenceClassification.from_pretrained(base, **labels_json).
    json labels = LabelFieldsJson(spec.data.labels);
    labels["label_field"] = spec.data.label_field;
    QLORAD_RETURN_IF_ERROR(WriteJsonFile(dir + "/" + kLabelsFile, labels));
  }
  const json config = {
      {"peft_type", "LORA"},
      {"task_type", classification ? "SEQ_CLS" : "CAUSAL_LM"},
      {"r", spec.lora.r},
      {"lora_alpha", LoraAlphaJson(spec.lora.alpha)},
      {"lora_dropout", spec.lora.dropout},
      {"target_modules", spec.lora.target_modules},
      {"use_rslora", spec.lora.use_rslora},
      {"bias", "none"},
      {"base_model_name_or_path", spec.model.path},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", classification ? json::array({kScoreModule}) : json(nullptr)}};
  return WriteJsonFile(dir + "/adapter_config.json", config);
}

namespace {

StatusOr<json> ReadConfigJson(const std::string& path) {
  QLORAD_ASSIGN_OR_RETURN(json j, ReadJsonFile(path));
  if (!j.is_object()) return InvalidArgument(path + ": expected a JSON object");
  return j;
}

bool IsSeqCls(const json& config) {
  return config.value("task_type", json()) == "SEQ_CLS";
}

// ReadAdapterConfig; `task` none takes either task.
StatusOr<LoraSpec> ReadConfig(const std::string& dir, std::optional<Task> task) {
  const std::string path = dir + "/adapter_config.json";
  QLORAD_ASSIGN_OR_RETURN(const json j, ReadConfigJson(path));
  const bool seq_cls = IsSeqCls(j);
  if (task && seq_cls != (*task == Task::kClassification)) {
    return InvalidArgument(path + ": task_type: " + j.value("task_type", json()).dump() +
                           (seq_cls ? ": a sequence-classification adapter (its score head: "
                                      "qlorad-train classify runs it, and export --format hf "
                                      "merges it into a sequence-classification model)"
                                    : ": not a sequence-classification (SEQ_CLS) adapter"));
  }
  // A SEQ_CLS adapter trains its score head whole: PEFT lists it (and "classifier", a name
  // other architectures use) in modules_to_save.
  const json modules = j.value("modules_to_save", json());
  if (seq_cls && !(modules.is_array() &&
                   std::find(modules.begin(), modules.end(), kScoreModule) != modules.end())) {
    return InvalidArgument(path + ": modules_to_save: a SEQ_CLS adapter needs \"score\", got " +
                           modules.dump());
  }
  if (j.value("peft_type", std::string("LORA")) != "LORA") {
    return InvalidArgument(path + ": peft_type: only LORA adapters are supported, got " +
                           j["peft_type"].dump());
  }
  auto unsupported = [&](const char* key, const json& allowed) -> Status {
    if (!j.contains(key) || j[key].is_null() || j[key] == allowed) return Status::Ok();
    if (j[key].is_object() && j[key].empty()) return Status::Ok();
    return InvalidArgument(path + ": " + key + ": " + j[key].dump() + " is not supported");
  };
  QLORAD_RETURN_IF_ERROR(unsupported("use_dora", false));
  QLORAD_RETURN_IF_ERROR(unsupported("bias", "none"));
  QLORAD_RETURN_IF_ERROR(unsupported("fan_in_fan_out", false));
  QLORAD_RETURN_IF_ERROR(unsupported("rank_pattern", json::object()));
  QLORAD_RETURN_IF_ERROR(unsupported("alpha_pattern", json::object()));
  if (!seq_cls) QLORAD_RETURN_IF_ERROR(unsupported("modules_to_save", nullptr));
  QLORAD_RETURN_IF_ERROR(unsupported("layers_to_transform", nullptr));
  QLORAD_RETURN_IF_ERROR(unsupported("exclude_modules", nullptr));
  QLORAD_RETURN_IF_ERROR(unsupported("layer_replication", nullptr));
  QLORAD_RETURN_IF_ERROR(unsupported("lora_bias", false));
  LoraSpec lora;
  try {
    lora.r = j.at("r").get<int>();
    lora.alpha = j.at("lora_alpha").get<double>();
    lora.dropout = j.value("lora_dropout", 0.0);
    lora.use_rslora = j.value("use_rslora", false);
    const json& targets = j.at("target_modules");
    if (targets == "all-linear") {
      // PEFT's all-linear is every linear layer but the output head: our seven projections.
      lora.target_modules = LoraSpec{}.target_modules;
    } else if (targets.is_array()) {
      lora.target_modules = targets.get<std::vector<std::string>>();
    } else {
      return InvalidArgument(path +
                             ": target_modules: expected a list of module names or "
                             "\"all-linear\" (regular expressions are not supported), got " +
                             targets.dump());
    }
  } catch (const json::exception& e) {
    return InvalidArgument(path + ": " + e.what());
  }
  if (lora.r <= 0) return InvalidArgument(path + ": r: must be positive");
  return lora;
}

}  // namespace

StatusOr<LoraSpec> ReadAdapterConfig(const std::string& dir, Task task) {
  return ReadConfig(dir, task);
}

StatusOr<Task> ReadAdapterTask(const std::string& dir) {
  QLORAD_ASSIGN_OR_RETURN(const json j, ReadConfigJson(dir + "/adapter_config.json"));
  return IsSeqCls(j) ? Task::kClassification : Task::kCausalLm;
}

namespace {

// The file's name for `key`: as written, or with PEFT's ".default" adapter name before "weight".
const SafetensorsTensorInfo* FindAdapterTensor(const SafetensorsFile& file, const std::string& key,
                                               std::string* found) {
  const std::string named = key.substr(0, key.size() - 6) + "default.weight";
  for (const std::string& candidate : {key, named}) {
    if (const SafetensorsTensorInfo* info = file.Find(candidate)) {
      *found = candidate;
      return info;
    }
  }
  return nullptr;
}

Status CheckScale(const LlamaModel& model, const std::string& dir) {
  if (!fs::exists(dir + "/adapter_config.json")) return Status::Ok();
  QLORAD_ASSIGN_OR_RETURN(const LoraSpec lora, ReadConfig(dir, std::nullopt));
  for (const auto& [name, linear] : model->NamedLoraTargets()) {
    if (!linear->has_lora()) continue;
    const double scale = linear->lora_options().scale;
    if (std::abs(lora.Scale() - scale) > 1e-12 * std::abs(scale)) {
      return InvalidArgument(dir + "/adapter_config.json: lora_alpha " +
                             std::to_string(lora.alpha) + " with r " + std::to_string(lora.r) +
                             (lora.use_rslora ? " (rsLoRA)" : "") + " gives scale " +
                             std::to_string(lora.Scale()) + ", the model's LoRA has " +
                             std::to_string(scale) + " (set lora.alpha/use_rslora to match)");
    }
    break;
  }
  return Status::Ok();
}

// PEFT saves the base lm_head next to its LoRA (save_embedding_layers); loading it would replace
// the head. It is accepted only as the model's own head, so nothing is silently replaced.
Status CheckSavedBaseHead(const LlamaModel& model, const SafetensorsFile& file,
                          const std::string& path, std::set<std::string>* used) {
  for (const std::string key :
       {"base_model.model.lm_head.base_layer.weight", "base_model.model.lm_head.weight"}) {
    const SafetensorsTensorInfo* info = file.Find(key);
    if (info == nullptr) continue;
    QLORAD_ASSIGN_OR_RETURN(const at::Tensor saved, ReadTensor(file, *info));
    const at::Tensor head = model->lm_head();
    if (saved.sizes() != head.sizes() ||
        !at::equal(saved.to(at::kFloat), head.to(at::kCPU, at::kFloat))) {
      return InvalidArgument(path + ": tensor '" + key +
                             "' (the base lm_head PEFT saved) differs from the model's lm_head: "
                             "the adapter was made on another base model");
    }
    used->insert(key);
  }
  return Status::Ok();
}

}  // namespace

Status LoadAdapter(LlamaModel& model, const std::string& dir) {
  const std::string path = dir + "/adapter_model.safetensors";
  QLORAD_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
  at::NoGradGuard no_grad;
  std::set<std::string> used;
  for (const auto& [name, linear] : model->NamedLoraTargets()) {
    if (!linear->has_lora()) continue;
    for (bool is_a : {true, false}) {
      const std::string key = AdapterKey(name, is_a);
      std::string found;
      const SafetensorsTensorInfo* info = FindAdapterTensor(file, key, &found);
      if (info == nullptr) return InvalidArgument(path + ": tensor '" + key + "' is missing");
      used.insert(found);
      const at::Tensor& param = is_a ? linear->lora_a() : linear->lora_b();
      if (info->shape != param.sizes().vec()) {
        return InvalidArgument(path + ": tensor '" + found + "' has shape " +
                               c10::str(c10::IntArrayRef(info->shape)) + ", the model needs " +
                               c10::str(param.sizes()) + " (different lora.r?)");
      }
      QLORAD_ASSIGN_OR_RETURN(at::Tensor value, ReadTensor(file, *info));
      if (!at::isFloatingType(value.scalar_type())) {
        return InvalidArgument(path + ": tensor '" + found + "' is not a float tensor");
      }
      param.copy_(value);
    }
  }
  QLORAD_RETURN_IF_ERROR(CheckSavedBaseHead(model, file, path, &used));
  used.insert(WholeModuleKey(kScoreModule));  // a SEQ_CLS head: the classifier reads it
  for (const auto& info : file.tensors()) {
    if (used.count(info.name) == 0) {
      return InvalidArgument(path + ": tensor '" + info.name +
                             "' belongs to no adapted layer of the model (lora.target_modules "
                             "differ from the adapter's?)");
    }
  }
  // After the shapes: a different r is reported as such, not as the scale it implies.
  return CheckScale(model, dir);
}

}  // namespace qlorad::trainer
