// qloractl --json: every job, step or log line becomes one JSON object on one line.
// Keys are the proto field names (snake_case), every field is present, 64-bit integers are JSON
// numbers (the proto3 JSON mapping would make them strings, which scripts then have to convert),
// and job states read like the text output: "state": "COMPLETED".
#pragma once

#include <google/protobuf/message.h>

#include <nlohmann/json.hpp>

namespace qlorad::cli {

nlohmann::json ToJson(const google::protobuf::Message& message);

}  // namespace qlorad::cli
