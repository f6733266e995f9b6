#include "worker/trainer/train/loss_head.h"

namespace qlorad::trainer {

LinearHead LossHeadOf(const LlamaModel& model) {
  const QLoraLinear& head = model->lm_head_linear();
  if (!head->has_lora()) return LinearHead(model->lm_head());
  return LinearHead(model->lm_head(), head->lora_a(), head->lora_b(), head->lora_options().scale);
}

LinearHead LossHeadOf(const LlamaModel& model, const at::Tensor& hidden) {
  LinearHead head = LossHeadOf(model);
  const QLoraLinear& linear = model->lm_head_linear();
  const double p = head.has_lora() ? linear->lora_options().dropout : 0.0;
  if (p > 0 && linear->is_training()) head.lora_input = at::dropout(hidden, p, true);
  return head;
}

}  // namespace qlorad::trainer
