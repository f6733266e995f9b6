// What `qloractl watch` shows for each training step: a progress bar redrawn in place on a
// terminal, or one plain line per step when stdout is a pipe or a file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "qlorad/v1/common.pb.h"

namespace qlorad::cli {

// "[####......]" for 40 of 100 steps at width 10. An unknown total (0) shows an empty bar.
std::string RenderProgressBar(int64_t step, int64_t total, int width);

// Estimates the time left from the trainer's own clock (wall_time_s), so replayed steps
// (watch --from-step) give the same estimate as live ones. A restart (new attempt) or a step
// that goes backwards starts a new estimate: the trainer's clock restarts with the process.
class EtaEstimator {
 public:
  void Observe(const qlorad::v1::StepMetrics& m);
  // Seconds until total_steps, or nothing until two steps of the same attempt have been seen.
  std::optional<double> SecondsLeft() const;

 private:
  int32_t attempt_ = -1;
  int64_t first_step_ = 0;
  double first_wall_s_ = 0;
  int64_t last_step_ = 0;
  double last_wall_s_ = 0;
  int64_t total_steps_ = 0;
};

// "[#####.....] 40/100  loss 2.3412  eval 2.4101  1.2k tok/s  ETA 0:35": `eval_loss` is the last
// one seen (data.validation evaluates only some steps; the bar keeps it in view), if any.
std::string RenderProgressLine(const qlorad::v1::StepMetrics& m, std::optional<double> eta_s,
                               int bar_width, std::optional<double> eval_loss = std::nullopt);

// The progress line for a terminal `columns` wide, never longer than columns - 1 (writing the
// last column makes many terminals wrap, and a wrapped line can no longer be redrawn in place).
// The bar shrinks from 30 to 10 cells first; then tok/s, eval and ETA are dropped in that order
// (loss is what people watch), then the bar; what still does not fit is cut.
std::string FitProgressLine(const qlorad::v1::StepMetrics& m, std::optional<double> eta_s,
                            int columns, std::optional<double> eval_loss = std::nullopt);

// "job-1 queued, position 2 of 3 (0:12)" (the place: job_text.h's QueuedText), cut to
// columns - 1 like the progress line.
std::string RenderQueuedLine(const qlorad::v1::Job& job, double elapsed_s, int columns);

// "step 40/100  loss 2.3412  lr 2.00e-04  grad_norm 0.8123  1.2k tok/s  vram 1.5 GiB  ETA 0:35"
// (vram only when the trainer reported any: CPU runs report 0; "eval_loss 2.4101  eval_ppl 11.14"
// after the loss on an evaluated step).
std::string RenderStepLine(const qlorad::v1::StepMetrics& m, std::optional<double> eta_s);

}  // namespace qlorad::cli
