// What a run learns from its evaluations: the best eval loss so far (keep-best saves that step's
// checkpoint apart) and, with train.early_stopping, when to stop. Torch-free bookkeeping; its
// state travels in resume checkpoints, so a restarted job keeps counting where it was.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "common/jobspec.h"

namespace qlorad::trainer {

struct EvalProgress {
  int64_t best_step = 0;  // 0: no evaluation yet
  double best_loss = std::numeric_limits<double>::infinity();
  std::string best_checkpoint;  // <output_dir>/best/step-N, once saved
  // Evaluations since the last one that lowered the best by more than min_delta.
  int64_t evals_without_improvement = 0;
};

class EvalTracker {
 public:
  explicit EvalTracker(std::optional<EarlyStoppingSpec> early_stopping, EvalProgress from = {})
      : early_stopping_(early_stopping), progress_(std::move(from)) {}

  struct Verdict {
    bool new_best = false;  // lower than every earlier eval loss: keep this step's checkpoint
    bool stop = false;      // early stopping: patience is used up
  };
  // A non-finite loss is never the best and never an improvement.
  Verdict Record(int64_t step, double eval_loss);
  void SetBestCheckpoint(std::string path) { progress_.best_checkpoint = std::move(path); }
  const EvalProgress& progress() const { return progress_; }

 private:
  std::optional<EarlyStoppingSpec> early_stopping_;
  EvalProgress progress_;
};

}  // namespace qlorad::trainer
