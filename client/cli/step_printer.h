// Prints the steps of a metrics stream in one of three forms: JSON lines (every rank), a progress
// line redrawn in place on a terminal, or plain lines when stdout is a pipe or a file. The text
// forms show rank 0 only: every rank reports every step, and rank 0 stands for the job.
#pragma once

#include <optional>
#include <ostream>
#include <string>

#include "client/cli/progress.h"
#include "qlorad/v1/common.pb.h"

namespace qlorad::cli {

enum class StepFormat { kJson, kProgressBar, kLines };

class StepPrinter {
 public:
  // Plain lines come at most this often on the trainer's clock (a tiny model makes dozens of
  // steps a second, and a log file of them helps nobody); the first step of an attempt, evaluated
  // steps and the last step always print. The trainer's clock, not ours, so that a replay of a
  // finished job prints the same lines as following it live did.
  static constexpr double kLineIntervalS = 0.5;

  // `columns`: the terminal's width, for the progress bar.
  StepPrinter(std::ostream& out, StepFormat format, int columns = 80)
      : out_(out), format_(format), columns_(columns) {}
  void Print(const qlorad::v1::StepMetrics& m);
  // On a terminal, replaces the open line with `line` (the queued line before the first step).
  void Redraw(const std::string& line);
  // Ends a progress line left open and prints a plain line held back by the rate limit, so that
  // what follows starts on a line of its own.
  void Finish();

 private:
  void PrintLine(const qlorad::v1::StepMetrics& m);

  std::ostream& out_;
  StepFormat format_;
  int columns_;
  EtaEstimator eta_;
  bool line_open_ = false;
  std::optional<double> last_eval_loss_;         // the bar keeps showing it between evaluations
  std::optional<qlorad::v1::StepMetrics> held_;  // a plain line the rate limit held back
  std::optional<double> last_line_wall_s_;       // when the last plain line's step ran
  int32_t last_line_attempt_ = -1;
};

}  // namespace qlorad::cli
