// Reading and writing the JSON files of Hugging Face directories and of our own outputs
// (config.json, adapter_config.json, index files, checkpoint state); errors name the file.
#pragma once

#include <istream>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace qlorad::trainer {

// How deep the trainer's JSON readers let arrays and objects nest. Real files nest a few levels;
// a data line nested 100,000 deep crashed the trainer with a stack overflow (copying, printing
// and comparing a value recurse on its depth), naming no file (issue 19).
inline constexpr int kMaxJsonDepth = 128;

// Parses JSON nested at most kMaxJsonDepth deep, so that the value is safe to copy and print.
// INVALID_ARGUMENT "not valid JSON: ..." or "JSON nested deeper than 128 levels"; the caller
// prefixes where the text came from.
StatusOr<nlohmann::json> ParseJson(const std::string& text);
StatusOr<nlohmann::json> ParseJson(std::istream& in);

// NOT_FOUND "PATH: cannot open" or INVALID_ARGUMENT "PATH: not valid JSON: ..." (or nested too
// deep, as ParseJson says).
StatusOr<nlohmann::json> ReadJsonFile(const std::string& path);

// Writes `value` indented by 2, with a final newline; INTERNAL "PATH: write failed".
Status WriteJsonFile(const std::string& path, const nlohmann::json& value);

}  // namespace qlorad::trainer
