#include "client/cli/follow_notes.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "client/cli/job_text.h"
#include "client/cli/progress.h"
#include "client/cli/rpc.h"

namespace qlorad::cli {
namespace {

double ElapsedS(const qlorad::v1::Job& job, int64_t now_unix_ms) {
  const int64_t since = job.state() == qlorad::v1::JOB_STATE_QUEUED || job.started_unix_ms() == 0
                            ? job.created_unix_ms()
                            : job.started_unix_ms();
  return static_cast<double>(std::max<int64_t>(0, now_unix_ms - since)) / 1000.0;
}

}  // namespace

std::string StateJsonLine(const qlorad::v1::Job& job, int64_t now_unix_ms) {
  const nlohmann::json line = {{"type", "state"},
                               {"job_id", job.id()},
                               {"state", JobStateName(job.state())},
                               {"worker_id", job.worker_id()},
                               {"attempt", job.attempt()},
                               {"elapsed_s", ElapsedS(job, now_unix_ms)}};
  return line.dump();
}

std::string QueuedJsonLine(const qlorad::v1::Job& job, int64_t now_unix_ms) {
  const nlohmann::json line = {{"type", "queued"},
                               {"job_id", job.id()},
                               {"position", job.queue_position()},
                               {"queue_length", job.queue_length()},
                               {"elapsed_s", ElapsedS(job, now_unix_ms)}};
  return line.dump();
}

void FollowNotes::Job(const qlorad::v1::Job& job, int64_t now_unix_ms, bool shown_steps) {
  const std::pair<qlorad::v1::JobState, int32_t> now{job.state(), job.attempt()};
  const bool changed = last_ != now;
  const bool new_attempt = last_ && last_->second != job.attempt();
  last_ = now;
  if (IsTerminal(job.state())) return;  // the end has its own line
  const bool queued = job.state() == qlorad::v1::JOB_STATE_QUEUED;
  const std::pair<int32_t, int32_t> place{job.queue_position(), job.queue_length()};
  const bool moved = queued && place != last_place_;
  last_place_ = queued ? place : std::pair<int32_t, int32_t>{0, 0};
  if (ctx_.options.json) {
    if (changed) ctx_.out << StateJsonLine(job, now_unix_ms) << "\n" << std::flush;
    if (moved && place.first > 0)
      ctx_.out << QueuedJsonLine(job, now_unix_ms) << "\n" << std::flush;
    return;
  }
  if (shown_steps) {
    if (new_attempt) {
      printer_.Finish();
      ctx_.err << fmt::format("{} is {} again, as attempt {}\n", job.id(),
                              JobStateName(job.state()), job.attempt())
               << std::flush;
    }
  } else if (ctx_.tty) {
    const std::string line = queued
                                 ? RenderQueuedLine(job, ElapsedS(job, now_unix_ms), ctx_.columns)
                                 : fmt::format("{} running on {}, waiting for its first step",
                                               job.id(), job.worker_id());
    printer_.Redraw(line.substr(0, static_cast<size_t>(std::max(ctx_.columns - 1, 0))));
  } else if (queued && (changed || moved)) {
    ctx_.err << job.id() << " is " << QueuedText(job) << "\n" << std::flush;
  }
}

void FollowNotes::Reconnecting(const grpc::Status& why, int tries, std::chrono::milliseconds wait) {
  if (ctx_.options.json) {
    const nlohmann::json line = {{"type", "reconnecting"},
                                 {"server", ctx_.options.server},
                                 {"code", GrpcCodeName(why.error_code())},
                                 {"message", why.error_message()},
                                 {"try", tries},
                                 {"wait_s", static_cast<double>(wait.count()) / 1000.0}};
    ctx_.err << line.dump() << "\n" << std::flush;
    return;
  }
  printer_.Finish();  // a progress line left open would be cut by the note
  ctx_.err << fmt::format("{} qlorad at {} ({}: {}); reconnecting, try {} (waits up to {:.1f}s)\n",
                          tries == 1 ? "lost" : "still no", ctx_.options.server,
                          GrpcCodeName(why.error_code()), why.error_message(), tries,
                          static_cast<double>(wait.count()) / 1000.0)
           << std::flush;
}

void FollowNotes::Reconnected(int64_t from_step) {
  if (ctx_.options.json) {
    const nlohmann::json line = {
        {"type", "reconnected"}, {"server", ctx_.options.server}, {"from_step", from_step}};
    ctx_.err << line.dump() << "\n" << std::flush;
    return;
  }
  ctx_.err << "reconnected to qlorad at " << ctx_.options.server << "; resuming from step "
           << from_step << "\n"
           << std::flush;
}

}  // namespace qlorad::cli
