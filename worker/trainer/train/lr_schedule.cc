#include "worker/trainer/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace qlorad::trainer {

double LearningRateAt(const TrainSpec& spec, int64_t step) {
  const int64_t warmup = std::max<int64_t>(spec.warmup_steps, 0);
  if (step < warmup) {
    return spec.lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  }
  if (spec.scheduler == Scheduler::kConstant) return spec.lr;
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, spec.max_steps - warmup));
  const double progress = static_cast<double>(step - warmup) / decay_steps;
  if (spec.scheduler == Scheduler::kLinear) return spec.lr * std::max(0.0, 1.0 - progress);
  return spec.lr * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
}

}  // namespace qlorad::trainer
