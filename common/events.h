// The trainer's event lines: how qlorad-train tells its supervisor (qlorad-worker, or a person
// reading `--json` output) what is happening. One JSON object per line on stdout, each with an
// "event" key:
//   {"event":"started","pid":..,"total_steps":..,"device":"cpu","rank":0,"world_size":1}
//   {"event":"metrics","step":..,"total_steps":..,"loss":..,"lr":..,"grad_norm":..,
//    "tokens_per_s":..,"vram_allocated_bytes":..,"vram_reserved_bytes":..,"vram_peak_bytes":..,
//    "wall_time_s":..,"rank":0, "eval_loss":..,"eval_perplexity":..,  (eval_*: evaluated steps)
//    "eval_accuracy":..}                                  (task: classification's evaluations)
//   {"event":"log","level":"info","message":".."}
//   {"event":"checkpoint","step":..,"path":"/abs/dir"}
//   {"event":"micro_batch_reduced","step":..,"from_rows":4,"to_rows":2,"grad_accum":2,
//    "seq_len":..,"message":".."}   (a step ran out of memory and is retried in smaller pieces)
//   {"event":"done","steps":..,"adapter_path":"/abs/dir","final_loss":..,"stopped_early":false,
//    "best_step":..,"best_eval_loss":..,"best_checkpoint_path":"/abs/dir",
//    "best_adapter_path":"/abs/dir"}                                  (best_*: with evaluation)
//   {"event":"error","message":"..","field":"data.path"}     (field may be empty)
// Paths are absolute. A reader must ignore keys it does not know (the format grows). A number that
// may be non-finite (losses, grad_norm, eval_*) is then the string "NaN", "Infinity" or
// "-Infinity" (common/json_number.h); trainers before that wrote null.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace qlorad::events {

struct Metrics {
  int64_t step = 0;
  int64_t total_steps = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  int64_t vram_allocated_bytes = 0;
  int64_t vram_reserved_bytes = 0;
  int64_t vram_peak_bytes = 0;
  double wall_time_s = 0;
  int rank = 0;
  // Set on a step after which the validation set was evaluated (data.validation): the mean loss
  // per trained token over all of it, every rank's share included. The line adds its perplexity.
  std::optional<double> eval_loss;
  // task: classification, with eval_loss: the fraction of the validation examples whose most
  // likely label is theirs.
  std::optional<double> eval_accuracy;
};

// The evaluation of a run with the lowest eval loss, kept apart from the rolling checkpoints.
struct BestEval {
  int64_t step = 0;
  double eval_loss = 0;
  std::string checkpoint_path;  // <output_dir>/best/step-N
  std::string adapter_path;     // its adapter/
};

// A step ran out of device memory and is run again with its micro-batches cut into pieces of
// `to_rows` rows (grad_accum times more of them: the same global batch); later steps keep that.
struct MicroBatchReduced {
  int64_t step = 0;        // 1-based, the step that ran out of memory
  int64_t from_rows = 0;   // rows per forward before
  int64_t to_rows = 0;     // and from now on
  int64_t grad_accum = 0;  // forwards per optimizer step and rank from now on
  int64_t seq_len = 0;     // tokens per row of the micro-batch that did not fit
  std::string message;     // for people: what ran out, and what happens now
};

struct Done {
  int64_t steps = 0;
  std::string adapter_path;
  double final_loss = 0;
  bool stopped_early = false;  // train.early_stopping ended the run before max_steps
  std::optional<BestEval> best = std::nullopt;  // with data.validation
};

std::string StartedLine(int64_t pid, int64_t total_steps, const std::string& device, int rank,
                        int world_size);
std::string MetricsLine(const Metrics& m);
std::string LogLine(const std::string& level, const std::string& message);
std::string CheckpointLine(int64_t step, const std::string& path);
std::string MicroBatchReducedLine(const MicroBatchReduced& reduced);
std::string DoneLine(const Done& done);
std::string ErrorLine(const std::string& message, const std::string& field = "");

}  // namespace qlorad::events
