#include "worker/trainer/train/classification_export.h"

#include <map>

#include "worker/trainer/model/adapter.h"

namespace qlorad::trainer {

using nlohmann::json;

StatusOr<json> SequenceClassificationConfig(json config, const std::vector<std::string>& labels,
                                            const std::string& config_path) {
  static const std::map<std::string, std::string> kArchitectures = {
      {"llama", "LlamaForSequenceClassification"},
      {"mistral", "MistralForSequenceClassification"},
      {"qwen2", "Qwen2ForSequenceClassification"}};
  const std::string model_type = config.value("model_type", std::string());
  const auto architecture = kArchitectures.find(model_type);
  if (architecture == kArchitectures.end()) {
    return InvalidArgument(config_path + ": model_type: '" + model_type +
                           "' has no sequence-classification export (llama, mistral, qwen2)");
  }
  json pad = config.value("pad_token_id", json());
  if (pad.is_null()) {
    const json eos = config.value("eos_token_id", json());
    pad = eos.is_array() && !eos.empty() ? eos.front() : eos;
  }
  if (!pad.is_null() && !pad.is_number_integer()) {
    return InvalidArgument(config_path + ": pad_token_id: expected a token id, got " + pad.dump());
  }
  config.update(LabelFieldsJson(labels));
  config["architectures"] = json::array({architecture->second});
  config["problem_type"] = "single_label_classification";
  config["pad_token_id"] = pad;
  return config;
}

}  // namespace qlorad::trainer
