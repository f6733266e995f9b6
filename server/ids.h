// Fresh identifiers for jobs and workers: a prefix and 8 random hex digits ("job-1f3a9c07").
#pragma once

#include <string>

namespace qlorad::server {

std::string RandomId(const std::string& prefix);

}  // namespace qlorad::server
