// Learning rate per optimizer step: linear warmup, then cosine, linear or constant. Same formulas
// as Hugging Face's get_*_schedule_with_warmup, so loss curves are comparable with PEFT runs.
#pragma once

#include <cstdint>

#include "common/jobspec.h"

namespace qlorad::trainer {

// `step` is 0-based: the lr used by the step-th optimizer update of `spec.max_steps`.
double LearningRateAt(const TrainSpec& spec, int64_t step);

}  // namespace qlorad::trainer
