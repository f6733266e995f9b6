// The plain-text view of `qloractl workers` (the --json view is json_output.h's).
#pragma once

#include <string>
#include <vector>

#include "qlorad/v1/jobs.pb.h"

namespace qlorad::cli {

// WORKER_STATE_BUSY -> "BUSY", as job states read.
std::string WorkerStateName(qlorad::v1::WorkerState state);

// NAME, STATE, JOB (its id and rank: "job-1a2b rank 0"; "another user's" for a busy worker whose
// job the coordinator did not name), DEVICES ("cuda:0 NVIDIA H100 80GB HBM3 79.1 GiB", several
// joined by ", "), HOST, HEARTBEAT ("1.2s ago"; "-" for a lost worker). FormatTable's layout.
std::string FormatWorkerTable(const std::vector<qlorad::v1::WorkerInfo>& workers);

}  // namespace qlorad::cli
