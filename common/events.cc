#include "common/events.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/json_number.h"

namespace qlorad::events {

using nlohmann::json;

namespace {
// NaN/Inf are not JSON; a diverged loss is written as "NaN" or "Infinity" (json_number.h),
// which the agent reads back as the number it was.
json Number(double v) {
  return JsonNumber(v);
}
}  // namespace

std::string StartedLine(int64_t pid, int64_t total_steps, const std::string& device, int rank,
                        int world_size) {
  return json{{"event", "started"}, {"pid", pid},   {"total_steps", total_steps},
              {"device", device},   {"rank", rank}, {"world_size", world_size}}
      .dump();
}

std::string MetricsLine(const Metrics& m) {
  json line{{"event", "metrics"},
            {"step", m.step},
            {"total_steps", m.total_steps},
            {"loss", Number(m.loss)},
            {"lr", m.lr},
            {"grad_norm", Number(m.grad_norm)},
            {"tokens_per_s", m.tokens_per_s},
            {"vram_allocated_bytes", m.vram_allocated_bytes},
            {"vram_reserved_bytes", m.vram_reserved_bytes},
            {"vram_peak_bytes", m.vram_peak_bytes},
            {"wall_time_s", m.wall_time_s},
            {"rank", m.rank}};
  if (m.eval_loss) {
    line["eval_loss"] = Number(*m.eval_loss);
    line["eval_perplexity"] = Number(std::exp(*m.eval_loss));
  }
  if (m.eval_accuracy) line["eval_accuracy"] = *m.eval_accuracy;
  return line.dump();
}

std::string LogLine(const std::string& level, const std::string& message) {
  return json{{"event", "log"}, {"level", level}, {"message", message}}.dump(
      -1, ' ', false, json::error_handler_t::replace);
}

std::string CheckpointLine(int64_t step, const std::string& path) {
  return json{{"event", "checkpoint"}, {"step", step}, {"path", path}}.dump();
}

std::string MicroBatchReducedLine(const MicroBatchReduced& r) {
  return json{{"event", "micro_batch_reduced"},
              {"step", r.step},
              {"from_rows", r.from_rows},
              {"to_rows", r.to_rows},
              {"grad_accum", r.grad_accum},
              {"seq_len", r.seq_len},
              {"message", r.message}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string DoneLine(const Done& done) {
  json line{{"event", "done"},
            {"steps", done.steps},
            {"adapter_path", done.adapter_path},
            {"final_loss", Number(done.final_loss)},
            {"stopped_early", done.stopped_early}};
  if (done.best) {
    line["best_step"] = done.best->step;
    line["best_eval_loss"] = Number(done.best->eval_loss);
    line["best_checkpoint_path"] = done.best->checkpoint_path;
    line["best_adapter_path"] = done.best->adapter_path;
  }
  return line.dump();
}

std::string ErrorLine(const std::string& message, const std::string& field) {
  return json{{"event", "error"}, {"message", message}, {"field", field}}.dump(
      -1, ' ', false, json::error_handler_t::replace);
}

}  // namespace qlorad::events
