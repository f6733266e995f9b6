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

class FollowNotes {
 public:
  FollowNotes(const CommandContext& ctx, StepPrinter& printer) : ctx_(ctx), printer_(printer) {}

  // Called with each fresh view of the job. With --json: a "state" line when the state or the
  // attempt changed (a restart, a requeue after a coordinator restart). Before the first step, on
  // a terminal: the queued line with its elapsed time, redrawn in place; on a pipe one note on
  // stderr (stdout keeps one line per step). After steps were shown, a new attempt gets a note on
  // stderr.
  void Job(const qlorad::v1::Job& job, int64_t now_unix_ms, bool shown_steps);
  // The stream or the coordinator went away; the next try waits up to `wait`.
  void Reconnecting(const grpc::Status& why, int tries, std::chrono::milliseconds wait);
  void Reconnected(int64_t from_step);

 private:
  const CommandContext& ctx_;
  StepPrinter& printer_;
  std::optional<std::pair<qlorad::v1::JobState, int32_t>> last_;  // state, attempt
};

}  // namespace qlorad::cli
