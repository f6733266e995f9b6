// Reconciling the coordinator's view with the trainers that actually run. After a coordinator
// restart, a job left RUNNING keeps its attempt and waits (up to the heartbeat timeout) for its
// workers to register and report it; a worker that registers again after a lost connection
// reports what it runs as well. A reported attempt that is still the job's current one is
// adopted, so the trainer goes on and its queued events count; any other is stopped. Without
// this, a restart left the old trainer running beside a new attempt of the same job.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "server/coordinator.h"

namespace qlorad::server {

Status Coordinator::RecoverJobsLeftRunning() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto adopt_by = options_.now() + options_.heartbeat_timeout;
  return Mutate([&](Published& out) -> Status {
    QLORAD_ASSIGN_OR_RETURN(auto running, store_->ListJobs({v1::JOB_STATE_RUNNING}, 0));
    for (JobRecord& record : running) {
      const v1::Job& job = record.job;
      if (record.cancel_requested) {
        // Its trainers are stopped when their workers report them: the job is no longer running.
        QLORAD_RETURN_IF_ERROR(
            Log(job.id(), "info", "cancelled: the coordinator restarted meanwhile", out));
        QLORAD_RETURN_IF_ERROR(Finish(record, v1::JOB_STATE_CANCELLED, "", out));
        continue;
      }
      const size_t ranks = static_cast<size_t>(std::max(job.gpus(), 1));
      Run& run = runs_[job.id()] = Run{};
      run.rank_workers.assign(ranks, "");
      run.exited.assign(ranks, false);
      run.adopt_by = adopt_by;
      // The done event is the one thing of the attempt the store keeps besides the checkpoint:
      // an exit 0 that arrives after the restart still completes the job.
      run.done = !job.adapter_path().empty();
      QLORAD_RETURN_IF_ERROR(Log(
          job.id(), "warning",
          fmt::format("the coordinator restarted while attempt {} ran; waiting up to {} ms for its "
                      "worker(s) to report it",
                      job.attempt(), options_.heartbeat_timeout.count()),
          out));
    }
    return Status::Ok();
  });
}

Status Coordinator::AdoptOrStop(const std::string& worker_id,
                                const std::vector<std::string>& replaced,
                                const v1::RunningAttempt& attempt, v1::RegisterResponse& response,
                                Published& out) {
  WorkerState& worker = workers_.at(worker_id);
  auto found = store_->GetJob(attempt.job_id());
  auto run = runs_.find(attempt.job_id());
  const int rank = attempt.rank();
  std::string refused;
  if (!found.ok()) {
    refused = "the job is unknown here";
  } else if (found->job.state() != v1::JOB_STATE_RUNNING ||
             found->job.attempt() != attempt.attempt() || run == runs_.end()) {
    refused = fmt::format("the job is {} at attempt {}", JobStateName(found->job.state()),
                          found->job.attempt());
  } else if (rank < 0 || rank >= static_cast<int>(run->second.rank_workers.size())) {
    refused = fmt::format("the attempt has no rank {}", rank);
  } else {
    const std::string& holder = run->second.rank_workers[rank];
    const bool claimable =
        holder.empty() || std::find(replaced.begin(), replaced.end(), holder) != replaced.end();
    if (!claimable || run->second.exited[rank]) {
      refused = fmt::format("rank {} is held by another worker", rank);
    }
  }
  if (!refused.empty()) {
    const std::string message =
        fmt::format("worker {} still runs attempt {} rank {} (pid {}); stopping it: {}",
                    worker.name, attempt.attempt(), rank, attempt.pid(), refused);
    if (found.ok()) {
      QLORAD_RETURN_IF_ERROR(Log(attempt.job_id(), "warning", message, out));
    } else {
      spdlog::warn("{}: {}", attempt.job_id(), message);
    }
    // Until its exit is reported the worker is busy, and its events stay fenced out.
    worker.foreign_jobs.insert(attempt.job_id());
    SendOrder(worker_id, CancelOrder(attempt.job_id(), attempt.attempt(), rank));
    return Status::Ok();
  }

  JobRecord& record = *found;
  Run& current = run->second;
  const std::string previous = current.rank_workers[rank];
  // The old entry is dropped next; what moved here must not be requeued with it.
  if (!previous.empty()) workers_.at(previous).running.erase({attempt.job_id(), attempt.attempt()});
  current.rank_workers[rank] = worker_id;
  worker.running.insert({attempt.job_id(), attempt.attempt()});
  if (std::none_of(current.rank_workers.begin(), current.rank_workers.end(),
                   [](const std::string& w) { return w.empty(); })) {
    current.adopt_by.reset();
  }
  if (rank == 0) {
    record.job.set_worker_id(worker_id);
    QLORAD_RETURN_IF_ERROR(store_->UpdateJob(record));
  }
  *response.add_adopted() = attempt;
  QLORAD_RETURN_IF_ERROR(
      Log(attempt.job_id(), "info",
          fmt::format("attempt {} rank {} adopted from worker {} ({}, pid {}, at step {}) after {}",
                      attempt.attempt(), rank, worker.name, worker_id, attempt.pid(),
                      attempt.last_step(),
                      previous.empty() ? "a coordinator restart" : "it registered again"),
          out));
  if (record.cancel_requested) {
    SendOrder(worker_id, CancelOrder(attempt.job_id(), attempt.attempt(), rank));
  }
  return Status::Ok();
}

Status Coordinator::ExpireUnclaimedRuns(Published& out) {
  const auto now = options_.now();
  std::vector<std::string> expired;
  for (const auto& [job_id, run] : runs_) {
    if (run.adopt_by && now > *run.adopt_by) expired.push_back(job_id);
  }
  for (const auto& job_id : expired) {
    QLORAD_ASSIGN_OR_RETURN(JobRecord record, store_->GetJob(job_id));
    QLORAD_RETURN_IF_ERROR(
        AttemptLost(record,
                    fmt::format("no worker reported it within {} ms of the coordinator's restart",
                                options_.heartbeat_timeout.count()),
                    out));
  }
  return Status::Ok();
}

}  // namespace qlorad::server
