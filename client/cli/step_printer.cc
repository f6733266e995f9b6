#include "client/cli/step_printer.h"

#include "client/cli/json_output.h"

namespace qlorad::cli {

// Carriage return, then erase to the end of the line: the new text may be shorter than the old.
constexpr const char* kRedrawStart = "\r";
constexpr const char* kEraseToEnd = "\x1b[K";

void StepPrinter::Print(const qlorad::v1::StepMetrics& m) {
  if (format_ == StepFormat::kJson) {
    out_ << JsonLine("metrics", m) << "\n";
    out_.flush();
    return;
  }
  if (m.rank() != 0) return;
  eta_.Observe(m);
  if (m.has_eval_loss()) last_eval_loss_ = m.eval_loss();
  if (format_ == StepFormat::kProgressBar) {
    Redraw(FitProgressLine(m, eta_.SecondsLeft(), columns_, last_eval_loss_));
    return;
  }
  const bool new_attempt = m.attempt() != last_line_attempt_;
  const bool due = !last_line_wall_s_ || m.wall_time_s() < *last_line_wall_s_ ||
                   m.wall_time_s() - *last_line_wall_s_ >= kLineIntervalS;
  const bool last = m.total_steps() > 0 && m.step() >= m.total_steps();
  if (new_attempt || due || last || m.has_eval_loss()) {
    PrintLine(m);
  } else {
    held_ = m;
  }
}

void StepPrinter::PrintLine(const qlorad::v1::StepMetrics& m) {
  held_.reset();
  last_line_wall_s_ = m.wall_time_s();
  last_line_attempt_ = m.attempt();
  out_ << RenderStepLine(m, eta_.SecondsLeft()) << "\n";
  out_.flush();
}

void StepPrinter::Redraw(const std::string& line) {
  if (format_ != StepFormat::kProgressBar) return;
  out_ << kRedrawStart << line << kEraseToEnd;
  line_open_ = true;
  out_.flush();
}

void StepPrinter::Finish() {
  if (held_) PrintLine(*held_);
  if (line_open_) out_ << "\n";
  line_open_ = false;
  out_.flush();
}

}  // namespace qlorad::cli
