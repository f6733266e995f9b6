#include "worker/trainer/adapter.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "worker/trainer/safetensors_torch.h"

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

Status SaveAdapter(const LlamaModel& model, const JobSpec& spec, const std::string& dir) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, linear] : model->NamedLinears()) {
    if (!linear->has_lora()) continue;
    tensors.emplace_back(AdapterKey(name, true), linear->lora_a().to(at::kFloat));
    tensors.emplace_back(AdapterKey(name, false), linear->lora_b().to(at::kFloat));
  }
  return SaveAdapterTensors(tensors, spec, dir);
}

Status SaveAdapterTensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                          const JobSpec& spec, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Internal(dir + ": cannot create directory: " + ec.message());
  QLORAD_RETURN_IF_ERROR(
      SaveTensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}}));
  const json config = {{"peft_type", "LORA"},
                       {"task_type", "CAUSAL_LM"},
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
                       {"modules_to_save", nullptr}};
  const std::string config_path = dir + "/adapter_config.json";
  std::ofstream out(config_path, std::ios::trunc);
  out << config.dump(2) << "\n";
  out.close();
  if (!out) return Internal(config_path + ": write failed");
  return Status::Ok();
}

Status LoadAdapter(LlamaModel& model, const std::string& dir) {
  const std::string path = dir + "/adapter_model.safetensors";
  QLORAD_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
  at::NoGradGuard no_grad;
  for (const auto& [name, linear] : model->NamedLinears()) {
    if (!linear->has_lora()) continue;
    for (bool is_a : {true, false}) {
      const std::string key = AdapterKey(name, is_a);
      const SafetensorsTensorInfo* info = file.Find(key);
      if (info == nullptr) return InvalidArgument(path + ": tensor '" + key + "' is missing");
      const at::Tensor& param = is_a ? linear->lora_a() : linear->lora_b();
      if (info->shape != param.sizes().vec()) {
        return InvalidArgument(path + ": tensor '" + key + "' has shape " +
                               c10::str(c10::IntArrayRef(info->shape)) + ", the model needs " +
                               c10::str(param.sizes()) + " (different lora.r?)");
      }
      QLORAD_ASSIGN_OR_RETURN(at::Tensor value, ReadTensor(file, *info));
      param.copy_(value);
    }
  }
  return Status::Ok();
}

}  // namespace qlorad::trainer
