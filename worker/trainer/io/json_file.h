// Reading and writing the JSON files of Hugging Face directories and of our own outputs
// (config.json, adapter_config.json, index files, checkpoint state); errors name the file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace qlorad::trainer {

// NOT_FOUND "PATH: cannot open" or INVALID_ARGUMENT "PATH: not valid JSON: ...".
StatusOr<nlohmann::json> ReadJsonFile(const std::string& path);

// Writes `value` indented by 2, with a final newline; INTERNAL "PATH: write failed".
Status WriteJsonFile(const std::string& path, const nlohmann::json& value);

}  // namespace qlorad::trainer
