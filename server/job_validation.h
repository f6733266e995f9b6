// Turns a submitted YAML spec into a new, QUEUED job record. Validation is common/jobspec's
// ParseJobSpec, so the coordinator and the trainer reject the same specs with the same
// messages (each names the field, e.g. "train.lr: must be > 0").
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "common/jobspec.h"
#include "common/path_sandbox.h"
#include "common/status.h"
#include "server/store.h"

namespace qlorad::server {

// A spec is a page of YAML; the cap keeps one client from filling the store (and every later
// read of the job) with megabytes. qlorad's --max-spec-bytes sets it, up to kMaxSpecBytesLimit:
// GetJob and SubmitJob return the spec, and what they return must fit the 4 MiB that gRPC
// clients accept by default.
inline constexpr size_t kDefaultMaxSpecBytes = size_t{1} << 20;
inline constexpr size_t kMaxSpecBytesLimit = size_t{3} << 20;

// INVALID_ARGUMENT naming the field when the spec is bad, or naming its size and the cap when it
// is longer than max_spec_bytes (checked before the YAML is parsed). The caller assigns nothing
// else: id, created time, name, priority, restarts, steps and world size all come from here.
// `parsed`, when given, receives the parsed spec.
StatusOr<JobRecord> NewJobFromSpec(const std::string& spec_yaml, int64_t now_unix_ms,
                                   size_t max_spec_bytes, JobSpec* parsed = nullptr);

// A registered worker's name and the roots it reported (common/path_sandbox.h).
using WorkerRoots = std::pair<std::string, PathRoots>;

// The spec's paths as written (the coordinator cannot see a worker's files or links; the worker
// checks again with links followed) against the workers' roots: OK when no worker reported roots
// or one of them allows every path; else INVALID_ARGUMENT naming the field, the path, the first
// worker's roots and how many other workers refuse it too.
Status CheckPathsOnWorkers(const JobSpec& spec, const std::vector<WorkerRoots>& workers);

}  // namespace qlorad::server
