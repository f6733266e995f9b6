// Which queued jobs start now, and on which workers. Pure planning: no locks, no I/O beyond
// asking for a free port, so the rules are testable on their own.
//
// Rules: jobs run by priority (higher first), then by submit time (older first). A job that
// asks for N GPUs needs N free workers at once and starts on all of them together (a gang),
// never on fewer. A job that fits nowhere right now holds back the jobs behind it, so a large
// job is not starved by a stream of small ones; a job larger than every registered worker put
// together cannot start at all and is skipped instead of blocking the queue.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace qlorad::server {

struct QueuedJob {
  std::string id;
  int priority = 0;
  int64_t created_unix_ms = 0;
  int gpus = 1;
};

struct FreeWorker {
  std::string id;
  std::string hostname;
};

struct Placement {
  std::string job_id;
  std::vector<std::string> worker_ids;  // index = rank
  std::string rendezvous;               // host of rank 0's worker + ":" + a free port
};

// Returns a port that is free now on the given host (for the c10d TCPStore of a gang).
using PortPicker = std::function<int(const std::string& host)>;

// Binds an ephemeral port on this machine and releases it: right when workers share the
// coordinator's host, a best guess otherwise (the trainer reports a clash, and the job retries).
int PickLocalFreePort(const std::string& host);

std::vector<Placement> PlanPlacements(std::vector<QueuedJob> queued, std::vector<FreeWorker> free,
                                      int registered_workers, const PortPicker& pick_port);

}  // namespace qlorad::server
