// Turns a submitted YAML spec into a new, QUEUED job record. Validation is common/jobspec's
// ParseJobSpec, so the coordinator and the trainer reject the same specs with the same
// messages (each names the field, e.g. "train.lr: must be > 0").
#pragma once

#include <string>

#include "common/status.h"
#include "server/store.h"

namespace qlorad::server {

// INVALID_ARGUMENT naming the field when the spec is bad. The caller assigns nothing else:
// id, created time, name, priority, restarts, steps and world size all come from here.
StatusOr<JobRecord> NewJobFromSpec(const std::string& spec_yaml, int64_t now_unix_ms);

}  // namespace qlorad::server
