// A whole file read for a command-line flag (certificates, keys, credentials), with the error
// the user needs: "--tls-cert: cannot read /etc/qlorad/cert.pem: No such file or directory".
#pragma once

#include <string>

#include "common/status.h"

namespace qlorad {

StatusOr<std::string> ReadFileForFlag(const std::string& path, const std::string& flag);

}  // namespace qlorad
