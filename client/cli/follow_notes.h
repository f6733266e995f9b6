// What `watch` says about the job besides its steps: the state it is in before its first step
// (queued, started), and the coordinator going away and coming back. With --json these are JSON
// lines (json_output.h): "state" on stdout, "reconnecting"/"reconnected" on stderr.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "client/cli/command_context.h"
#include "client/cli/step_printer.h"
#include "qlorad/v1/common.pb.h"

namespace qlorad::cli {

// {"type": "state", "job_id", "state", "worker_id", "attempt", "elapsed_s"}: elapsed_s counts
// from the job's creation (queued) or its start (running).
std::string StateJsonLine(const qlorad::v1::Job& job, int64_t now_unix_ms);
// {"type": "queued", "job_id", "position", "queue_length", "elapsed_s"}: a queued job's place in
// line (Job.queue_position; 1 starts next).
std::string QueuedJsonLine(const qlorad::v1::Job& job, int64_t now_unix_ms);

class FollowNotes {
 public:
  FollowNotes(const CommandContext& ctx, StepPrinter& printer) : ctx_(ctx), printer_(printer) {}

  // Called with each fresh view of the job. With --json: a "state" line when the state or the
  // attempt changed (a restart, a requeue after a coordinator restart), and a "queued" line each
  // time its place in line changed. Before the first step, on a terminal: the queued line with
  // its place and elapsed time, redrawn in place; on a pipe a note on stderr when it is queued
  // and each time its place changed (stdout keeps one line per step). After steps were shown, a new
  // attempt gets a note on stderr.
  void Job(const qlorad::v1::Job& job, int64_t now_unix_ms, bool shown_steps);
  // The stream or the coordinator went away; the next try waits up to `wait`.
  void Reconnecting(const grpc::Status& why, int tries, std::chrono::milliseconds wait);
  void Reconnected(int64_t from_step);

 private:
  const CommandContext& ctx_;
  StepPrinter& printer_;
  std::optional<std::pair<qlorad::v1::JobState, int32_t>> last_;  // state, attempt
  std::pair<int32_t, int32_t> last_place_{0, 0};                  // position, queue length
};

}  // namespace qlorad::cli
