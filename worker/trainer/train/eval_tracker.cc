#include "worker/trainer/train/eval_tracker.h"

#include <cmath>

namespace qlorad::trainer {

EvalTracker::Verdict EvalTracker::Record(int64_t step, double eval_loss) {
  Verdict verdict;
  const bool finite = std::isfinite(eval_loss);
  const double min_delta = early_stopping_ ? early_stopping_->min_delta : 0.0;
  // Against the best before this evaluation: a gain of min_delta or less is a new best (its
  // checkpoint is kept) that still uses up patience, as Hugging Face's EarlyStoppingCallback.
  const bool improved = finite && eval_loss < progress_.best_loss - min_delta;
  verdict.new_best = finite && eval_loss < progress_.best_loss;
  if (verdict.new_best) {
    progress_.best_step = step;
    progress_.best_loss = eval_loss;
  }
  progress_.evals_without_improvement = improved ? 0 : progress_.evals_without_improvement + 1;
  verdict.stop =
      early_stopping_ && progress_.evals_without_improvement >= early_stopping_->patience;
  return verdict;
}

}  // namespace qlorad::trainer
