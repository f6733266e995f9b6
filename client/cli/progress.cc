#include "client/cli/progress.h"

#include <fmt/format.h>

#include <algorithm>

#include "client/cli/job_text.h"
#include "client/cli/units.h"

namespace qlorad::cli {
namespace {

std::string StepOfTotal(int64_t step, int64_t total) {
  if (total <= 0) return fmt::format("{}/?", step);
  return fmt::format("{}/{}", step, total);
}

std::string Eta(std::optional<double> eta_s) {
  return "ETA " + FormatDuration(eta_s.value_or(-1));
}

// The fields of a progress line after the bar; `show` picks the optional ones.
struct ProgressFields {
  bool rate = true;
  bool eval = true;
  bool eta = true;
};

std::string ProgressText(const qlorad::v1::StepMetrics& m, std::optional<double> eta_s,
                         std::optional<double> eval_loss, ProgressFields show) {
  std::string text =
      fmt::format("{}  loss {:.4f}", StepOfTotal(m.step(), m.total_steps()), m.loss());
  if (show.eval && eval_loss) text += fmt::format("  eval {:.4f}", *eval_loss);
  if (show.rate) text += fmt::format("  {} tok/s", FormatRate(m.tokens_per_s()));
  if (show.eta) text += "  " + Eta(eta_s);
  return text;
}

// Cuts `line` to what fits before the last column (the texts are ASCII: one byte, one column).
std::string CutToFit(std::string line, int columns) {
  const auto max = static_cast<size_t>(std::max(columns - 1, 0));
  if (line.size() > max) line.resize(max);
  return line;
}

}  // namespace

std::string RenderProgressBar(int64_t step, int64_t total, int width) {
  int64_t filled = 0;
  if (total > 0) filled = std::clamp<int64_t>(step * width / total, 0, width);
  return "[" + std::string(static_cast<size_t>(filled), '#') +
         std::string(static_cast<size_t>(width - filled), '.') + "]";
}

void EtaEstimator::Observe(const qlorad::v1::StepMetrics& m) {
  total_steps_ = m.total_steps();
  if (m.attempt() != attempt_ || m.step() < last_step_) {
    attempt_ = m.attempt();
    first_step_ = m.step();
    first_wall_s_ = m.wall_time_s();
  }
  last_step_ = m.step();
  last_wall_s_ = m.wall_time_s();
}

std::optional<double> EtaEstimator::SecondsLeft() const {
  if (attempt_ < 0 || total_steps_ <= 0 || last_step_ <= first_step_) return std::nullopt;
  const double per_step =
      (last_wall_s_ - first_wall_s_) / static_cast<double>(last_step_ - first_step_);
  if (per_step < 0) return std::nullopt;
  return per_step * static_cast<double>(std::max<int64_t>(0, total_steps_ - last_step_));
}

std::string RenderProgressLine(const qlorad::v1::StepMetrics& m, std::optional<double> eta_s,
                               int bar_width, std::optional<double> eval_loss) {
  return RenderProgressBar(m.step(), m.total_steps(), bar_width) + " " +
         ProgressText(m, eta_s, eval_loss, {});
}

std::string FitProgressLine(const qlorad::v1::StepMetrics& m, std::optional<double> eta_s,
                            int columns, std::optional<double> eval_loss) {
  constexpr int kMaxBar = 30;
  constexpr int kMinBar = 10;
  const int room = columns - 1;
  const ProgressFields choices[] = {
      {true, true, true}, {false, true, true}, {false, false, true}, {false, false, false}};
  for (const ProgressFields& show : choices) {
    const std::string text = ProgressText(m, eta_s, eval_loss, show);
    // The bar takes its brackets and a space besides its cells.
    const int bar = std::min(kMaxBar, room - static_cast<int>(text.size()) - 3);
    if (bar >= kMinBar) return RenderProgressBar(m.step(), m.total_steps(), bar) + " " + text;
  }
  return CutToFit(ProgressText(m, eta_s, eval_loss, {false, false, false}), columns);
}

std::string RenderQueuedLine(const qlorad::v1::Job& job, double elapsed_s, int columns) {
  return CutToFit(fmt::format("{} {} ({})", job.id(), QueuedText(job), FormatDuration(elapsed_s)),
                  columns);
}

std::string RenderStepLine(const qlorad::v1::StepMetrics& m, std::optional<double> eta_s) {
  std::string line =
      fmt::format("step {}  loss {:.4f}", StepOfTotal(m.step(), m.total_steps()), m.loss());
  if (m.has_eval_loss()) {
    line += fmt::format("  eval_loss {:.4f}  eval_ppl {:.2f}", m.eval_loss(), m.eval_perplexity());
    if (m.has_eval_accuracy()) line += fmt::format("  eval_acc {:.4f}", m.eval_accuracy());
  }
  line += fmt::format("  lr {:.2e}  grad_norm {:.4f}  {} tok/s", m.lr(), m.grad_norm(),
                      FormatRate(m.tokens_per_s()));
  if (m.vram_peak_bytes() > 0) line += "  vram " + FormatBytes(m.vram_peak_bytes());
  return line + "  " + Eta(eta_s);
}

}  // namespace qlorad::cli
