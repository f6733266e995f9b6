// Plain-text views of jobs and log lines for qloractl (the --json views are in json_output.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qlorad/v1/common.pb.h"

namespace qlorad::cli {

// JOB_STATE_RUNNING -> "RUNNING".
std::string JobStateName(qlorad::v1::JobState state);
// "running" (any case) -> JOB_STATE_RUNNING; nothing for an unknown name.
std::optional<qlorad::v1::JobState> ParseJobState(const std::string& name);
bool IsTerminal(qlorad::v1::JobState state);

// The `qloractl jobs` table: ID, NAME, STATE, STEP/TOTAL, LOSS, WORKER, AGE, columns as wide as
// their widest cell, two spaces apart, no trailing spaces. Ends with a newline.
std::string FormatJobTable(const std::vector<qlorad::v1::Job>& jobs, int64_t now_unix_ms);

// Where a queued job stands: "queued, position 2 of 3" (Job.queue_position), or "queued,
// waiting for a worker" when it is not in line (no registered worker can take it).
std::string QueuedText(const qlorad::v1::Job& job);

// The `qloractl status` view: one "field  value" line per field, error included.
std::string FormatJobDetails(const qlorad::v1::Job& job, int64_t now_unix_ms);

// What `watch` prints once the job has ended: the final state, then
// "adapter written to <path>" for COMPLETED or the error for FAILED.
std::string FormatFinalState(const qlorad::v1::Job& job);

// "2026-11-25 16:30:01.123  info     trainer[0]  loading model"
std::string FormatLogLine(const qlorad::v1::LogLine& line);

}  // namespace qlorad::cli
