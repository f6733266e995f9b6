#include "server/scheduler.h"

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

#include "common/memory_estimate.h"
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

// What a worker has for a job: its free memory where known, else its total; -1 for a CPU.
int64_t Room(const FreeWorker& w) {
  if (w.gpu_memory_bytes < 0) return -1;
  return w.gpu_free_bytes >= 0 ? w.gpu_free_bytes : w.gpu_memory_bytes;
}

bool HasMemory(const QueuedJob& job, const FreeWorker& w) {
  if (job.memory_refused_by.count(w.id)) return false;
  const int64_t room = Room(w);
  return job.gpu_memory_bytes <= 0 || room < 0 || room >= job.gpu_memory_bytes;
}

bool Fits(const QueuedJob& job, const FreeWorker& w) {
  return HasMemory(job, w) && job.refused_by.count(w.id) == 0;
}

// The end of the reason a job no registered GPU has the memory for waits: the most one has.
std::string MostRoom(const QueuedJob& job, const std::vector<FreeWorker>& registered) {
  const FreeWorker* most = nullptr;
  for (const FreeWorker& w : registered) {
    if (job.memory_refused_by.count(w.id)) continue;
    if (most == nullptr || Room(w) > Room(*most)) most = &w;
  }
  if (most == nullptr) return "its trainer refused it for memory on every registered GPU";
  if (most->gpu_free_bytes >= 0) {
    return "the registered GPU with the most free memory has " +
           FormatMemory(most->gpu_free_bytes) + " free of " + FormatMemory(most->gpu_memory_bytes);
  }
  return "the largest registered GPU has " + FormatMemory(most->gpu_memory_bytes);
}

}  // namespace

int WorkersThatCouldTake(const QueuedJob& job, const std::vector<FreeWorker>& registered) {
  return static_cast<int>(std::count_if(registered.begin(), registered.end(),
                                        [&](const FreeWorker& w) { return Fits(job, w); }));
}

int PickLocalFreePort(const std::string& /*host*/) {
  const StatusOr<int> port = process::FreeTcpPort();
  return port.ok() ? *port : 0;
}

std::vector<Placement> PlanPlacements(std::vector<QueuedJob> queued, std::vector<FreeWorker> free,
                                      int registered_workers, const PortPicker& pick_port) {
  return PlanSchedule(std::move(queued), std::move(free),
                      std::vector<int64_t>(std::max(registered_workers, 0), -1), pick_port)
      .placements;
}

SchedulePlan PlanSchedule(std::vector<QueuedJob> queued, std::vector<FreeWorker> free,
                          const std::vector<int64_t>& registered_gpu_memory,
                          const PortPicker& pick_port) {
  std::vector<FreeWorker> registered;
  for (int64_t memory : registered_gpu_memory) registered.push_back({"", "", memory});
  return PlanScheduleOnWorkers(std::move(queued), std::move(free), registered, pick_port);
}

SchedulePlan PlanScheduleOnWorkers(std::vector<QueuedJob> queued, std::vector<FreeWorker> free,
                                   const std::vector<FreeWorker>& registered_workers,
                                   const PortPicker& pick_port) {
  std::sort(queued.begin(), queued.end(), [](const QueuedJob& a, const QueuedJob& b) {
    return std::make_tuple(-a.priority, a.created_unix_ms, a.id) <
           std::make_tuple(-b.priority, b.created_unix_ms, b.id);
  });
  OrderByHost(free);
  SchedulePlan plan;
  const int registered = static_cast<int>(registered_workers.size());
  // Set once a job waits for busy workers: the jobs behind it wait too (they are still looked
  // at, so that those no registered worker can take say why).
  bool blocked = false;
  for (const QueuedJob& job : queued) {
    const int gpus = std::max(job.gpus, 1);
    if (gpus > registered) continue;  // can never fit with the workers we have
    const int with_memory =
        static_cast<int>(std::count_if(registered_workers.begin(), registered_workers.end(),
                                       [&](const FreeWorker& w) { return HasMemory(job, w); }));
    const int fitting = WorkersThatCouldTake(job, registered_workers);
    if (with_memory >= gpus && fitting < gpus) {  // the workers' roots refuse its paths
      plan.waiting[job.id] = "waiting for a worker whose roots allow its paths: " + job.refusal;
      continue;
    }
    if (fitting < gpus) {  // no registered workers have the memory: skipped, with the reason
      plan.waiting[job.id] =
          (gpus == 1 ? "waiting for a worker with at least "
                     : "waiting for " + std::to_string(gpus) + " workers with at least ") +
          FormatMemory(job.gpu_memory_bytes) + " of GPU memory (its memory estimate); " +
          (gpus == 1 ? MostRoom(job, registered_workers)
                     : std::to_string(with_memory) + " registered have that much");
      continue;
    }
    if (blocked) {
      plan.line.push_back(job.id);
      continue;
    }
    // The free workers that fit, in host order; a one-rank job takes the smallest of them.
    std::vector<size_t> chosen;
    for (size_t i = 0; i < free.size(); ++i) {
      if (Fits(job, free[i])) chosen.push_back(i);
    }
    if (static_cast<int>(chosen.size()) < gpus) {
      if (job.gpu_memory_bytes > 0 && job.refused_by.empty()) {
        plan.waiting[job.id] = "waiting for a free worker with at least " +
                               FormatMemory(job.gpu_memory_bytes) +
                               " of GPU memory (its memory estimate)";
      }
      blocked = true;  // wait; keep its place
      plan.line.push_back(job.id);
      continue;
    }
    if (gpus == 1 && job.gpu_memory_bytes > 0) {
      const auto best_fit = [&](size_t i) {  // the least room that fits; CPU workers last
        const int64_t room = Room(free[i]);
        return room < 0 ? std::numeric_limits<int64_t>::max() : room;
      };
      chosen = {*std::min_element(chosen.begin(), chosen.end(),
                                  [&](size_t a, size_t b) { return best_fit(a) < best_fit(b); })};
    }
    chosen.resize(gpus);
    Placement p;
    p.job_id = job.id;
    for (size_t i : chosen) p.worker_ids.push_back(free[i].id);
    const FreeWorker& rank0 = free[chosen.front()];
    p.rendezvous = rank0.hostname + ":" +
                   std::to_string(rank0.rendezvous_port > 0 ? rank0.rendezvous_port
                                                            : pick_port(rank0.hostname));
    std::sort(chosen.rbegin(), chosen.rend());
    for (size_t i : chosen) free.erase(free.begin() + static_cast<std::ptrdiff_t>(i));
    plan.placements.push_back(std::move(p));
  }
  return plan;
}

}  // namespace qlorad::server
