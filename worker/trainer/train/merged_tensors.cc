#include "worker/trainer/train/merged_tensors.h"

#include <torch/torch.h>

namespace qlorad::trainer {

std::vector<MergedTensor> MergedTensors(const LlamaModel& model, int64_t* merged_layers) {
  std::vector<MergedTensor> out;
  const bool head_lora = model->lm_head_linear()->has_lora();
  for (const auto& [name, tensor] : model->NamedFrozenTensors()) {
    if (head_lora && name == "lm_head.weight") continue;  // written merged below
    at::Tensor t = tensor;
    out.push_back({name, t.sizes().vec(), [t] { return t.to(at::kFloat).contiguous(); }});
  }
  for (const auto& [name, linear_ref] : model->NamedLoraTargets()) {
    QLoraLinear linear = linear_ref;
    // An unadapted head is a frozen tensor above (or the embedding itself, when tied). An adapted
    // one is written on its own even when tied, over the embedding's values: the embedding stays
    // as it was, so the merged model computes what the base + adapter did.
    if (name == "lm_head" && !head_lora) continue;
    if (linear->has_lora()) ++*merged_layers;
    out.push_back({name + ".weight", {linear->out_features(), linear->in_features()}, [linear] {
                     at::NoGradGuard no_grad;
                     at::Tensor w = linear->BaseWeight(at::kFloat);
                     if (linear->has_lora()) {
                       // PEFT's merge: W + scale * B @ A, in fp32 before any output cast.
                       w = w + linear->lora_options().scale *
                                   at::matmul(linear->lora_b().to(at::kFloat),
                                              linear->lora_a().to(at::kFloat));
                     }
                     return w.contiguous();
                   }});
  }
  return out;
}

}  // namespace qlorad::trainer
