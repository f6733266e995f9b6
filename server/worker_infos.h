// What JobService.ListWorkers answers, before the caller's view is applied: the registered
// workers (idle or busy) and the workers the store remembers that are not registered now (lost).
#pragma once

#include <vector>

#include "qlorad/v1/jobs.pb.h"
#include "server/coordinator.h"
#include "server/store.h"

namespace qlorad::server {

// Registered ones first, then lost ones, each group by name. A busy worker's job is the attempt
// it holds a rank of, else the trainer it is stopping (rank -1).
std::vector<v1::WorkerInfo> WorkerInfos(const std::vector<WorkerView>& registered,
                                        const std::vector<WorkerRecord>& stored);

}  // namespace qlorad::server
