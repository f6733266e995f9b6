#include "server/scheduler.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "common/process/free_port.h"

namespace qlorad::server {
namespace {

// Workers of the host with the most free workers come first, so a gang lands on as few
// hosts as possible (NCCL within a host is far cheaper than across hosts).
void OrderByHost(std::vector<FreeWorker>& free) {
  std::map<std::string, int> per_host;
  for (const auto& w : free) ++per_host[w.hostname];
  std::sort(free.begin(), free.end(), [&](const FreeWorker& a, const FreeWorker& b) {
    return std::make_tuple(-per_host[a.hostname], a.hostname, a.id) <
           std::make_tuple(-per_host[b.hostname], b.hostname, b.id);
  });
}

}  // namespace

int PickLocalFreePort(const std::string& /*host*/) {
  const StatusOr<int> port = process::FreeTcpPort();
  return port.ok() ? *port : 0;
}

std::vector<Placement> PlanPlacements(std::vector<QueuedJob> queued, std::vector<FreeWorker> free,
                                      int registered_workers, const PortPicker& pick_port) {
  std::sort(queued.begin(), queued.end(), [](const QueuedJob& a, const QueuedJob& b) {
    return std::make_tuple(-a.priority, a.created_unix_ms, a.id) <
           std::make_tuple(-b.priority, b.created_unix_ms, b.id);
  });
  OrderByHost(free);
  std::vector<Placement> placements;
  size_t next_free = 0;
  for (const QueuedJob& job : queued) {
    const int gpus = std::max(job.gpus, 1);
    if (gpus > registered_workers) continue;  // can never fit with the workers we have
    if (static_cast<size_t>(gpus) > free.size() - next_free) break;  // wait; keep its place
    Placement p;
    p.job_id = job.id;
    for (int rank = 0; rank < gpus; ++rank) p.worker_ids.push_back(free[next_free++].id);
    const std::string& host = free[next_free - gpus].hostname;
    p.rendezvous = host + ":" + std::to_string(pick_port(host));
    placements.push_back(std::move(p));
  }
  return placements;
}

}  // namespace qlorad::server
