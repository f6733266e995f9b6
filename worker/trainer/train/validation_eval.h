// Evaluation during training (data.validation): the mean cross-entropy per trained token over
// the validation set, with the model as it is after a step. Every rank evaluates its share of
// the batches (data/eval_batches.h) and one all-reduce sums the token-weighted loss sums and the
// token counts, which are then divided: the result is that of one rank evaluating every batch,
// up to the order of the fp64 additions. Runs without autograd and with the model's
// training-mode switches (LoRA dropout) off, and puts them back as they were.
#pragma once

#include <cstdint>
#include <optional>

#include "common/status.h"
#include "worker/trainer/data/eval_batches.h"
#include "worker/trainer/train/setup.h"

namespace qlorad::trainer {

struct ValidationLoss {
  double loss = 0;     // mean over `tokens`
  int64_t tokens = 0;  // trained target tokens of the whole set, every rank's
  // task: classification (one target per example, so `tokens` counts examples): the fraction of
  // them whose most likely label is theirs.
  std::optional<double> accuracy;
};

// Every rank calls this (under fsdp the forwards gather each layer's shards).
StatusOr<ValidationLoss> EvaluateValidation(Session& s, Batcher& validation,
                                            const EvalShape& shape);

}  // namespace qlorad::trainer
