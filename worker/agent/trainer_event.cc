#include "worker/agent/trainer_event.h"

#include <chrono>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

#include "common/json_number.h"

namespace qlorad::agent {
namespace {

using nlohmann::json;

// Thrown for a field of the wrong type; caught in TrainerEventFromLine and turned into a log line.
struct BadField : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const json* Find(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

int64_t Int(const json& obj, const char* key) {
  const json* v = Find(obj, key);
  if (v == nullptr) return 0;
  if (!v->is_number_integer()) throw BadField(std::string(key) + ": expected an integer");
  return v->get<int64_t>();
}

// A non-finite number comes as "NaN", "Infinity" or "-Infinity" (common/json_number.h). Missing
// or null: NaN, because trainers before those strings wrote null for a loss that is not finite.
double Double(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::numeric_limits<double>::quiet_NaN();
  const std::optional<double> number = NumberFromJson(*it);
  if (!number) throw BadField(std::string(key) + ": expected a number");
  return *number;
}

std::string String(const json& obj, const char* key) {
  const json* v = Find(obj, key);
  if (v == nullptr) return "";
  if (!v->is_string()) throw BadField(std::string(key) + ": expected a string");
  return v->get<std::string>();
}

void FillMetrics(const json& obj, const EventContext& ctx, v1::StepMetrics* m) {
  m->set_job_id(ctx.job_id);
  m->set_attempt(ctx.attempt);
  m->set_rank(ctx.rank);
  m->set_step(Int(obj, "step"));
  m->set_total_steps(Int(obj, "total_steps"));
  m->set_loss(Double(obj, "loss"));
  m->set_lr(Double(obj, "lr"));
  m->set_grad_norm(Double(obj, "grad_norm"));
  m->set_tokens_per_s(Double(obj, "tokens_per_s"));
  m->set_vram_allocated_bytes(Int(obj, "vram_allocated_bytes"));
  m->set_vram_reserved_bytes(Int(obj, "vram_reserved_bytes"));
  m->set_vram_peak_bytes(Int(obj, "vram_peak_bytes"));
  m->set_wall_time_s(Double(obj, "wall_time_s"));
  // Only evaluated steps carry these; a diverged eval reads as NaN like the loss.
  if (obj.contains("eval_loss")) m->set_eval_loss(Double(obj, "eval_loss"));
  if (obj.contains("eval_perplexity")) m->set_eval_perplexity(Double(obj, "eval_perplexity"));
  if (obj.contains("eval_accuracy")) m->set_eval_accuracy(Double(obj, "eval_accuracy"));
}

void FillDone(const json& obj, v1::TrainerEvent::Done* done) {
  done->set_steps(Int(obj, "steps"));
  done->set_adapter_path(String(obj, "adapter_path"));
  done->set_final_loss(Double(obj, "final_loss"));
  const json* stopped_early = Find(obj, "stopped_early");
  if (stopped_early != nullptr && !stopped_early->is_boolean()) {
    throw BadField("stopped_early: expected true or false");
  }
  done->set_stopped_early(stopped_early != nullptr && stopped_early->get<bool>());
  if (!obj.contains("best_step")) return;
  v1::BestEval* best = done->mutable_best();
  best->set_step(Int(obj, "best_step"));
  best->set_eval_loss(Double(obj, "best_eval_loss"));
  best->set_checkpoint_path(String(obj, "best_checkpoint_path"));
  best->set_adapter_path(String(obj, "best_adapter_path"));
}

// Fills the payload for a known kind; false for a kind this agent does not know.
bool FillPayload(const std::string& kind, const json& obj, const EventContext& ctx, int64_t unix_ms,
                 v1::TrainerEvent* event) {
  if (kind == "metrics") {
    FillMetrics(obj, ctx, event->mutable_metrics());
  } else if (kind == "log") {
    const std::string level = String(obj, "level");
    *event =
        LogEvent(ctx, level.empty() ? "info" : level, String(obj, "message"), "trainer", unix_ms);
  } else if (kind == "checkpoint") {
    event->mutable_checkpoint()->set_step(Int(obj, "step"));
    event->mutable_checkpoint()->set_path(String(obj, "path"));
  } else if (kind == "done") {
    FillDone(obj, event->mutable_done());
  } else if (kind == "error") {
    event->mutable_error()->set_message(String(obj, "message"));
    event->mutable_error()->set_field(String(obj, "field"));
  } else if (kind == "started") {
    event->mutable_started()->set_pid(Int(obj, "pid"));
  } else if (kind == "micro_batch_reduced") {
    // The job goes on with smaller micro-batches: the user learns it from the job's log; the
    // numbers stay in the line for `qlorad-train --json` readers.
    *event = LogEvent(ctx, "warning", String(obj, "message"), "trainer", unix_ms);
  } else {
    return false;
  }
  return true;
}

}  // namespace

int64_t UnixMillisNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

v1::TrainerEvent LogEvent(const EventContext& ctx, const std::string& level,
                          const std::string& message, const std::string& source, int64_t unix_ms) {
  v1::TrainerEvent event;
  event.set_job_id(ctx.job_id);
  event.set_attempt(ctx.attempt);
  event.set_rank(ctx.rank);
  v1::LogLine* log = event.mutable_log();
  log->set_job_id(ctx.job_id);
  log->set_rank(ctx.rank);
  log->set_level(level);
  log->set_message(message);
  log->set_source(source);
  log->set_unix_ms(unix_ms);
  return event;
}

v1::TrainerEvent TrainerEventFromLine(std::string_view line, const EventContext& ctx,
                                      int64_t unix_ms) {
  const json obj = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!obj.is_object()) return LogEvent(ctx, "info", std::string(line), "trainer", unix_ms);
  auto kind = obj.find("event");
  if (kind == obj.end() || !kind->is_string()) {
    return LogEvent(ctx, "info", std::string(line), "trainer", unix_ms);
  }
  v1::TrainerEvent event;
  event.set_job_id(ctx.job_id);
  event.set_attempt(ctx.attempt);
  event.set_rank(ctx.rank);
  try {
    if (!FillPayload(kind->get<std::string>(), obj, ctx, unix_ms, &event)) {
      return LogEvent(ctx, "info", std::string(line), "trainer", unix_ms);
    }
  } catch (const BadField& e) {
    return LogEvent(ctx, "warning",
                    "malformed trainer event (" + std::string(e.what()) + "): " + std::string(line),
                    "trainer", unix_ms);
  }
  return event;
}

}  // namespace qlorad::agent
