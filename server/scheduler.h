// Which queued jobs start now, and on which workers. Pure planning: no locks, no I/O beyond
// asking for a free port, so the rules are testable on their own.
//
// Rules: jobs run by priority (higher first), then by submit time (older first). A job that
// asks for N GPUs needs N free workers at once and starts on all of them together (a gang),
// never on fewer. A job that fits nowhere right now holds back the jobs behind it, so a large
// job is not starved by a stream of small ones; a job larger than every registered worker put
// together cannot start at all and is skipped instead of blocking the queue.
//
// GPU memory: a job whose memory estimate is known (common/memory_estimate.h, from the model's
// config.json when the coordinator can read it, or raised to what a trainer's own check said when
// it refused the job) goes only to GPU workers whose memory covers it: the free memory a worker
// last measured while it ran no trainer, or its total where it reports none (an older worker);
// CPU workers are not memory-checked (the estimate models the GPU path: host memory has swap, no
// caching allocator, and the CPU path keeps other tensors). A job no registered worker has the
// memory for is skipped like a gang larger than the pool, with a reason the user sees; one whose
// fitting workers are busy waits and keeps its place. Of the fitting free workers a one-rank job
// takes the one with the least memory, leaving the larger GPUs to the jobs that need them. A
// worker whose trainer refused the job for memory (QueuedJob::memory_refused_by) does not count
// as having the memory for it again.
//
// Paths: a job goes only to workers whose read and write roots allow its paths (the roots each
// worker reported, checked by the coordinator: QueuedJob::refused_by). A job every registered
// worker refuses is skipped with the first refusal as its reason (submit refuses it outright when
// no worker allows it; this happens when the workers that did have left); one whose allowing
// workers are busy waits and keeps its place, as for memory.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace qlorad::server {

struct QueuedJob {
  std::string id;
  int priority = 0;
  int64_t created_unix_ms = 0;
  int gpus = 1;
  // GPU memory each of its workers needs (DeviceBytesNeeded of its estimate); 0: not checked.
  int64_t gpu_memory_bytes = 0;
  // Ids of the registered workers whose roots refuse its paths, and the first refusal's message
  // ("model.path: ... is outside the folders this worker may read: ..."), for the reason it waits.
  std::set<std::string> refused_by{};
  std::string refusal{};
  // Ids of the registered workers whose trainer refused it for GPU memory (memory_check.h).
  std::set<std::string> memory_refused_by{};
};

// A worker free to take a job, or (in PlanScheduleOnWorkers's `registered`) any registered worker.
struct FreeWorker {
  std::string id;
  std::string hostname;
  int64_t gpu_memory_bytes = -1;  // the GPU's total memory; -1: a CPU worker, not checked
  int64_t gpu_free_bytes = -1;    // its free memory, measured while idle; -1: not known
  int rendezvous_port = 0;        // the port the worker holds free on its host; 0: none reported
};

struct Placement {
  std::string job_id;
  std::vector<std::string> worker_ids;  // index = rank
  // Host of rank 0's worker + ":" + the port that worker holds free on its host (a worker that
  // reports none: pick_port's).
  std::string rendezvous;
};

// Returns a port that is free now on the given host (for the c10d TCPStore of a gang).
using PortPicker = std::function<int(const std::string& host)>;

// Binds an ephemeral port on this machine and releases it: for workers that hold no port of their
// own (older ones); right when they share the coordinator's host, a best guess otherwise (the
// trainer reports a clash, and the job retries).
int PickLocalFreePort(const std::string& host);

std::vector<Placement> PlanPlacements(std::vector<QueuedJob> queued, std::vector<FreeWorker> free,
                                      int registered_workers, const PortPicker& pick_port);

struct SchedulePlan {
  std::vector<Placement> placements;
  // Why a queued job was not placed, by job id, where GPU memory is the reason:
  // "waiting for a worker with at least 23.1 GiB of GPU memory (...); the largest has 15.9 GiB".
  std::map<std::string, std::string> waiting;
  // The jobs left queued that some registered worker could take, in the order they would start
  // (front: the next). Jobs no registered worker can take (a gang larger than the pool, a memory
  // estimate no GPU covers) are not in line: they wait for workers, not for other jobs.
  std::vector<std::string> line;
};

// How many of the registered workers, free or busy, could take the job: they have the memory,
// their roots allow its paths, and their trainer has not refused it for memory.
int WorkersThatCouldTake(const QueuedJob& job, const std::vector<FreeWorker>& registered);

// registered: every registered worker, free or busy (id and GPU memory matter here).
SchedulePlan PlanScheduleOnWorkers(std::vector<QueuedJob> queued, std::vector<FreeWorker> free,
                                   const std::vector<FreeWorker>& registered,
                                   const PortPicker& pick_port);
// PlanScheduleOnWorkers with the registered workers known by their GPU memory alone (-1: a CPU
// worker); no job may name them in refused_by.
SchedulePlan PlanSchedule(std::vector<QueuedJob> queued, std::vector<FreeWorker> free,
                          const std::vector<int64_t>& registered_gpu_memory,
                          const PortPicker& pick_port);

}  // namespace qlorad::server
