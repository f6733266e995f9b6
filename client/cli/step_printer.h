// Prints the steps of a metrics stream in one of three forms: JSON lines (every rank), a progress
// line redrawn in place on a terminal, or one plain line per step. The text forms show rank 0
// only: every rank reports every step, and rank 0 stands for the job.
#pragma once

#include <optional>
#include <ostream>

#include "client/cli/progress.h"
#include "qlorad/v1/common.pb.h"

namespace qlorad::cli {

enum class StepFormat { kJson, kProgressBar, kLines };

class StepPrinter {
 public:
  static constexpr int kBarWidth = 30;

  StepPrinter(std::ostream& out, StepFormat format) : out_(out), format_(format) {}
  void Print(const qlorad::v1::StepMetrics& m);
  // Ends a progress line left open, so that what follows starts on a line of its own.
  void Finish();

 private:
  std::ostream& out_;
  StepFormat format_;
  EtaEstimator eta_;
  bool line_open_ = false;
  std::optional<double> last_eval_loss_;  // the bar keeps showing it between evaluations
};

}  // namespace qlorad::cli
