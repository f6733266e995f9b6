#include "client/cli/step_printer.h"

#include "client/cli/json_output.h"

namespace qlorad::cli {

// Carriage return, then erase to the end of the line: the new text may be shorter than the old.
constexpr const char* kRedrawStart = "\r";
constexpr const char* kEraseToEnd = "\x1b[K";

void StepPrinter::Print(const qlorad::v1::StepMetrics& m) {
  if (format_ == StepFormat::kJson) {
    out_ << ToJson(m).dump() << "\n";
    out_.flush();
    return;
  }
  if (m.rank() != 0) return;
  eta_.Observe(m);
  if (m.has_eval_loss()) last_eval_loss_ = m.eval_loss();
  if (format_ == StepFormat::kProgressBar) {
    out_ << kRedrawStart << RenderProgressLine(m, eta_.SecondsLeft(), kBarWidth, last_eval_loss_)
         << kEraseToEnd;
    line_open_ = true;
  } else {
    out_ << RenderStepLine(m, eta_.SecondsLeft()) << "\n";
  }
  out_.flush();
}

void StepPrinter::Finish() {
  if (line_open_) out_ << "\n";
  line_open_ = false;
  out_.flush();
}

}  // namespace qlorad::cli
