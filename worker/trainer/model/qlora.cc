#include "worker/trainer/model/qlora.h"

#include <set>

namespace qlorad::trainer {

namespace {

// "model.layers.0.self_attn.q_proj" -> "q_proj": PEFT matches target_modules on the last name.
std::string LeafName(const std::string& name) {
  return name.substr(name.rfind('.') + 1);
}

}  // namespace

StatusOr<QLoraSummary> ApplyQLora(LlamaModel& model, const QuantizationSpec& quantization,
                                  const LoraSpec& lora, uint64_t seed,
                                  at::ScalarType lora_compute_dtype) {
  // Quantization covers the decoder projections; the head (a LoRA target) is never quantized.
  auto linears = model->NamedLinears();
  auto targetable = model->NamedLoraTargets();
  std::set<std::string> known;
  for (const auto& [name, linear] : targetable) known.insert(LeafName(name));
  for (const auto& target : lora.target_modules) {
    if (known.count(target) == 0) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      return InvalidArgument("lora.target_modules: '" + target +
                             "' matches no module (known: " + list + ")");
    }
  }
  const bool nf4 = quantization.type == QuantizationType::kNf4;
  if (nf4 && !Nf4OpsAvailable(model->device().type())) {
    return FailedPrecondition("quantization.type: nf4 on " + model->device().str() +
                              " needs the qlorad_ops library with kernels for that device, which "
                              "this build lacks (CUDA kernels need QLORAD_WITH_CUDA=ON); use "
                              "type: none or another build");
  }
  QLoraSummary summary;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const std::set<std::string> targets(lora.target_modules.begin(), lora.target_modules.end());
  const LoraOptions options{lora.r, lora.Scale(), lora.dropout, lora_compute_dtype};
  for (auto& [name, linear] : linears) {
    if (!nf4) break;
    // Already NF4 when the loader quantized it on the way in (QuantizeOnLoad).
    if (!linear->quantized())
      linear->QuantizeNF4(quantization.block_size, quantization.double_quant);
    ++summary.quantized_layers;
  }
  // In the model's module order, the head last, so adding lm_head leaves the others' A as it was.
  for (auto& [name, linear] : targetable) {
    if (targets.count(LeafName(name)) != 0) {
      LoraOptions layer_options = options;
      // The head's adapter runs inside the fp32 loss (LinearHead), so it computes in fp32.
      if (LeafName(name) == "lm_head") layer_options.compute_dtype = at::kFloat;
      linear->AddLora(layer_options, generator);
      ++summary.lora_layers;
      summary.trainable_parameters += lora.r * (linear->in_features() + linear->out_features());
    }
  }
  return summary;
}

std::vector<at::Tensor> LoraParameters(const LlamaModel& model) {
  std::vector<at::Tensor> params;
  for (const auto& [name, linear] : model->NamedLoraTargets()) {
    if (!linear->has_lora()) continue;
    params.push_back(linear->lora_a());
    params.push_back(linear->lora_b());
  }
  return params;
}

}  // namespace qlorad::trainer
