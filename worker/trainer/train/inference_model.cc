#include "worker/trainer/train/inference_model.h"

#include "worker/trainer/model/adapter.h"
#include "worker/trainer/model/qlora.h"
#include "worker/trainer/weights/bnb4bit_reader.h"

namespace qlorad::trainer {

StatusOr<LlamaModel> LoadModelForInference(const std::string& model_dir,
                                           const std::optional<std::string>& adapter_dir,
                                           at::Device device, at::ScalarType dtype,
                                           std::optional<QuantizeOnLoad> quantize, Task task) {
  QLORAD_ASSIGN_OR_RETURN(const LlamaConfig config, LoadLlamaConfig(model_dir));
  QLORAD_ASSIGN_OR_RETURN(const std::optional<BnbQuantization> bnb, ReadBnbQuantization(model_dir));
  QLORAD_ASSIGN_OR_RETURN(LoadedModel loaded, LoadLlamaModel(model_dir, config, bnb.has_value(),
                                                             device, dtype, quantize));
  if (!adapter_dir) return loaded.model;
  QLORAD_ASSIGN_OR_RETURN(const LoraSpec lora, ReadAdapterConfig(*adapter_dir, task));
  QuantizationSpec none;
  none.type = QuantizationType::kNone;  // the base stays as loaded
  auto applied = ApplyQLora(loaded.model, none, lora, /*seed=*/0);
  if (!applied.ok()) {
    return InvalidArgument(*adapter_dir + "/adapter_config.json: " + applied.status().message());
  }
  QLORAD_RETURN_IF_ERROR(LoadAdapter(loaded.model, *adapter_dir));
  loaded.model->eval();  // no LoRA dropout at inference (modules start in training mode)
  return loaded.model;
}

}  // namespace qlorad::trainer
