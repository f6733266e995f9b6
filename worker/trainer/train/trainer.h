// One training run of a job spec on one device: load and quantize the model, attach LoRA, stream
// batches, step AdamW, report events, checkpoint, and write the final adapter.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/runtime/event_sink.h"

namespace qlorad::trainer {

struct TrainOptions {
  std::string device;                 // auto | cpu | cuda; empty: resources.device
  std::optional<std::string> resume;  // see ResolveResumeCheckpoint
  // Set by the worker: which attempt of a service job this is. Checkpoints then go to
  // checkpoints/attempt-A (pruned only there), and a --resume that is gone or incomplete falls
  // back to the newest complete checkpoint under the output_dir, or to step 0 when none is.
  std::optional<int> attempt;
  int rank = 0;
  int world_size = 1;
  std::string rendezvous;  // HOST:PORT of the ranks' TCPStore; needed when world_size > 1
  // Polled after every optimizer step; true checkpoints and stops (SIGTERM).
  std::function<bool()> should_stop = [] { return false; };
};

struct TrainResult {
  int64_t steps = 0;           // optimizer steps completed, including resumed ones
  std::vector<double> losses;  // one per step run in this call
  std::string adapter_path;    // absolute; empty when stopped by should_stop
  bool stopped = false;        // should_stop fired; a checkpoint was written
  // With data.validation: (step, eval loss) of each evaluation run in this call, the best one
  // (its checkpoint and adapter kept in <output_dir>/best/step-N), and whether
  // train.early_stopping ended the run before max_steps.
  std::vector<std::pair<int64_t, double>> eval_losses;
  std::optional<events::BestEval> best;
  bool stopped_early = false;
};

// Errors carry the field or file in their message ("data.path: ...", "/m/config.json: ...").
StatusOr<TrainResult> Train(const JobSpec& spec, const TrainOptions& options, EventSink& events);

}  // namespace qlorad::trainer
