#include "worker/trainer/data/step_batches.h"

#include <utility>

namespace qlorad::trainer {

StepBatches DrawStepBatches(Batcher& batcher, const StepShape& shape) {
  StepBatches step;
  for (int64_t i = 0; i < shape.grad_accum; ++i) {
    for (int r = 0; r < shape.world_size; ++r) {
      Batch b = batcher.Next(shape.micro_batch_size);
      step.global_valid += b.valid_labels;
      step.global_tokens += b.tokens;
      if (r == shape.rank) step.mine.push_back(std::move(b));
    }
  }
  step.after = batcher.position();
  return step;
}

}  // namespace qlorad::trainer
