// Whole files read into memory: for a command-line flag (certificates, keys, credentials), with
// the error the user needs ("--tls-cert: cannot read /etc/qlorad/cert.pem: No such file or
// directory"), or plainly, where the caller words the error (or has none: /proc, cgroup files).
#pragma once

#include <optional>
#include <string>

#include "common/status.h"

namespace qlorad {

StatusOr<std::string> ReadFileForFlag(const std::string& path, const std::string& flag);

// The file's bytes, or nullopt when it cannot be opened or read.
std::optional<std::string> ReadWholeFile(const std::string& path);

}  // namespace qlorad
