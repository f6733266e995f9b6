// What the chunked loss (loss/chunked_loss.h) needs of a model's lm_head: the frozen weight, and
// A, B and the scale when lm_head has LoRA. Here, not in the model, so the model knows nothing of
// the loss.
#pragma once

#include <torch/torch.h>

#include "worker/trainer/loss/chunked_loss.h"
#include "worker/trainer/model/llama_model.h"

namespace qlorad::trainer {

LinearHead LossHeadOf(const LlamaModel& model);
// The same for a loss over `hidden` [N, hidden]: with a head LoRA that has dropout, and in
// training mode (as QLoraLinear's own forward), its lora_input is dropout(hidden), drawn here
// once per call; otherwise as LossHeadOf(model).
LinearHead LossHeadOf(const LlamaModel& model, const at::Tensor& hidden);

}  // namespace qlorad::trainer
