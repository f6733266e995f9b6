// qloractl --json: every job, step or log line becomes one JSON object on one line.
// Keys are the proto field names (snake_case), every field is present, 64-bit integers are JSON
// numbers (the proto3 JSON mapping would make them strings, which scripts then have to convert),
// and job and worker states read like the text output: "state": "COMPLETED", "BUSY". Each line also
// has a "type": "job" (submit, jobs, status, cancel, retry), "worker" (workers), "log", "metrics"
// (a step), "state" (watch: the job is queued or started), "done" (watch: the job as it ended),
// "error" (errors.h, on stderr).
#pragma once

#include <google/protobuf/message.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace qlorad::cli {

nlohmann::json ToJson(const google::protobuf::Message& message);

// One --json output line: ToJson(message) plus {"type": type}, without the newline.
std::string JsonLine(std::string_view type, const google::protobuf::Message& message);

}  // namespace qlorad::cli
