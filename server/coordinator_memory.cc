// What the coordinator knows of GPU memory beyond a job's own estimate: each worker's free
// memory, and the jobs a trainer refused for memory (train/memory_check.h: the trainer checks its
// estimate against what the device has free before loading anything, and exits 2 with a message
// PeakOfRefusal reads). Such a job is not the user's mistake while another registered GPU has the
// room, so it moves there: the trainer's estimate, made with the job's real options on a real
// device, becomes its need, and the worker that refused it is left out. Only when no registered
// worker could take it does it fail, with the trainer's message.
#include <fmt/format.h>

#include <algorithm>

#include "common/memory_estimate.h"
#include "server/coordinator.h"

namespace qlorad::server {

std::vector<FreeWorker> Coordinator::RegisteredWorkers() const {
  std::vector<FreeWorker> registered;
  for (const auto& [id, w] : workers_) {
    registered.push_back({id, w.hostname, w.gpu_memory_bytes, w.gpu_free_bytes, w.rendezvous_port});
  }
  return registered;
}

void Coordinator::NoteMemoryRefusals(QueuedJob& candidate) const {
  auto refusal = memory_refusals_.find(candidate.id);
  if (refusal == memory_refusals_.end()) return;
  candidate.gpu_memory_bytes =
      std::max(candidate.gpu_memory_bytes, refusal->second.gpu_memory_bytes);
  for (const auto& [id, w] : workers_) {
    if (refusal->second.worker_names.count(w.name)) candidate.memory_refused_by.insert(id);
  }
}

Status Coordinator::MoveOrFailRefused(JobRecord& record, const Run& run, int rank, int64_t peak,
                                      const std::string& reason, const std::string& stderr_tail,
                                      Published& out) {
  const v1::Job& job = record.job;
  const std::string& worker_id = run.rank_workers[rank];
  auto worker = workers_.find(worker_id);
  const std::string name = worker == workers_.end() ? worker_id : worker->second.name;
  MemoryRefusal& refusal = memory_refusals_[job.id()];
  refusal.gpu_memory_bytes = std::max(refusal.gpu_memory_bytes, DeviceBytesNeeded(peak));
  refusal.worker_names.insert(name);

  QueuedJob candidate{job.id(), job.priority(), job.created_unix_ms(), job.gpus()};
  if (auto spec = ParseJobSpec(job.spec_yaml()); spec.ok()) {
    NoteRefusingWorkers(*spec, record, candidate);
  }
  NoteMemoryRefusals(candidate);
  const std::string need = FormatMemory(refusal.gpu_memory_bytes);
  if (WorkersThatCouldTake(candidate, RegisteredWorkers()) >= std::max(job.gpus(), 1)) {
    return Requeue(record,
                   fmt::format("was refused by worker {} for GPU memory; its trainer's estimate "
                               "needs {} of GPU memory, which another registered worker has "
                               "(no restart spent)",
                               name, need),
                   out);
  }
  return RetryOrFail(
      record,
      fmt::format("{}; no registered worker it was not refused on has {} of GPU memory", reason,
                  need),
      false, stderr_tail, out);
}

}  // namespace qlorad::server
