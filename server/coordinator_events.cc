// How trainer events and lost workers move a job: metrics, logs, checkpoints and exits are
// applied to the job's record; an attempt that ends badly is retried from its last checkpoint
// or fails; a finished job releases its streams.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

#include "common/memory_refusal.h"
#include "server/coordinator.h"

namespace qlorad::server {
namespace {

// Exit code the trainer uses for bad input (spec, files, data): retrying cannot help.
constexpr int kBadInputExitCode = 2;

std::string DescribeExit(const v1::TrainerEvent::Exit& exit, const std::string& error_message) {
  std::string what = exit.signal() != 0
                         ? fmt::format("trainer killed by signal {}", exit.signal())
                         : fmt::format("trainer exited with code {}", exit.exit_code());
  if (exit.cancelled()) what += ", stopped by its worker";
  if (!error_message.empty()) what += ": " + error_message;
  return what;
}

// The log line of a completed job: where its adapters are, the best evaluation's too.
std::string CompletedMessage(const v1::Job& job) {
  std::string message = "completed; adapter at " + job.adapter_path();
  if (job.stopped_early()) message += " (stopped early: train.early_stopping)";
  if (job.has_best()) {
    message += fmt::format("; best eval loss {:.4f} at step {}, adapter at {}",
                           job.best().eval_loss(), job.best().step(), job.best().adapter_path());
  }
  return message;
}

}  // namespace

bool Coordinator::Run::HasLiveRank() const {
  for (size_t rank = 0; rank < rank_workers.size(); ++rank) {
    if (!rank_workers[rank].empty() && !exited[rank]) return true;
  }
  return false;
}

Status Coordinator::ApplyEvent(const std::string& worker_id, const v1::TrainerEvent& event,
                               Published& out) {
  auto found = store_->GetJob(event.job_id());
  if (!found.ok()) {
    spdlog::warn("worker {} reported an event for unknown job '{}'", worker_id, event.job_id());
    return Status::Ok();
  }
  JobRecord& record = *found;
  v1::Job& job = record.job;
  if (event.has_exit()) {
    WorkerState& worker = workers_.at(worker_id);
    worker.running.erase({event.job_id(), event.attempt()});
    // A trainer it was told to stop has ended: the worker is free again.
    if (!worker.Runs(event.job_id())) worker.foreign_jobs.erase(event.job_id());
  }
  auto run_it = runs_.find(job.id());
  const bool current = job.state() == v1::JOB_STATE_RUNNING && event.attempt() == job.attempt() &&
                       run_it != runs_.end() && event.rank() >= 0 &&
                       event.rank() < static_cast<int>(run_it->second.rank_workers.size()) &&
                       run_it->second.rank_workers[event.rank()] == worker_id;
  if (!current) {
    // The fence: events of an attempt that already ended (a retry began, or the job was
    // cancelled) or of a rank this worker does not hold change nothing, checkpoints included.
    spdlog::debug("ignoring an event of {} attempt {} from worker {}", job.id(), event.attempt(),
                  worker_id);
    return Status::Ok();
  }
  Run& run = run_it->second;
  switch (event.payload_case()) {
    case v1::TrainerEvent::kMetrics: {
      v1::StepMetrics m = event.metrics();
      m.set_job_id(job.id());
      m.set_attempt(event.attempt());
      m.set_rank(event.rank());
      if (m.total_steps() == 0) m.set_total_steps(job.total_steps());
      QLORAD_ASSIGN_OR_RETURN(int64_t cursor, store_->AppendMetrics(m));
      RecordStep(job, worker_id, m);
      if (event.rank() == 0) {
        job.set_last_step(m.step());
        job.set_last_loss(m.loss());
        QLORAD_RETURN_IF_ERROR(store_->UpdateJob(record));
        // Evaluations are few; a log line puts them in every log reader's view too.
        if (m.has_eval_loss()) {
          QLORAD_RETURN_IF_ERROR(
              Log(job.id(), "info",
                  fmt::format("eval at step {}: eval_loss {:.4f}, perplexity {:.3f}{}", m.step(),
                              m.eval_loss(), m.eval_perplexity(),
                              m.has_eval_accuracy()
                                  ? fmt::format(", accuracy {:.4f}", m.eval_accuracy())
                                  : std::string()),
                  out));
        }
      }
      out.metrics.push_back({cursor, std::move(m)});
      return Status::Ok();
    }
    case v1::TrainerEvent::kLog: {
      v1::LogLine line = event.log();
      line.set_job_id(job.id());
      line.set_rank(event.rank());
      if (line.source().empty()) line.set_source("trainer");
      if (line.level().empty()) line.set_level("info");
      if (line.unix_ms() == 0) line.set_unix_ms(NowUnixMs());
      QLORAD_ASSIGN_OR_RETURN(v1::LogLine stored, store_->AppendLog(std::move(line)));
      out.logs.push_back(std::move(stored));
      return Status::Ok();
    }
    case v1::TrainerEvent::kCheckpoint:
      record.last_checkpoint = event.checkpoint().path();
      QLORAD_RETURN_IF_ERROR(store_->UpdateJob(record));
      // In the log, so the dashboard's events and every log reader see where a retry resumes.
      return Log(job.id(), "info",
                 fmt::format("checkpoint at step {} (rank {}): {}", event.checkpoint().step(),
                             event.rank(), event.checkpoint().path()),
                 out);
    case v1::TrainerEvent::kDone:
      run.done = true;
      job.set_adapter_path(event.done().adapter_path());
      if (event.done().has_best()) *job.mutable_best() = event.done().best();
      job.set_stopped_early(event.done().stopped_early());
      return store_->UpdateJob(record);
    case v1::TrainerEvent::kError:
      run.error_message = event.error().message();
      run.error_field = event.error().field();
      return Log(job.id(), "error", "trainer error: " + event.error().message(), out);
    case v1::TrainerEvent::kStarted:
      return Log(job.id(), "info",
                 fmt::format("trainer started on worker {} (rank {}, pid {})",
                             workers_[worker_id].name, event.rank(), event.started().pid()),
                 out);
    case v1::TrainerEvent::kExit:
      return ApplyExit(record, run, event.rank(), event.exit(), out);
    case v1::TrainerEvent::PAYLOAD_NOT_SET:
      break;
  }
  return Status::Ok();
}

Status Coordinator::ApplyExit(JobRecord& record, Run& run, int rank,
                              const v1::TrainerEvent::Exit& exit, Published& out) {
  run.exited[rank] = true;
  const bool all_exited =
      std::all_of(run.exited.begin(), run.exited.end(), [](bool e) { return e; });
  const bool clean = exit.exit_code() == 0 && exit.signal() == 0;
  if (record.cancel_requested) {
    if (!all_exited) return Status::Ok();
    if (run.done && clean) {
      QLORAD_RETURN_IF_ERROR(
          Log(record.job.id(), "info", "completed before the cancel landed", out));
      return Finish(record, v1::JOB_STATE_COMPLETED, "", out);
    }
    QLORAD_RETURN_IF_ERROR(Log(record.job.id(), "info", "cancelled", out));
    return Finish(record, v1::JOB_STATE_CANCELLED, "", out);
  }
  if (exit.cancelled()) {
    // Stopped by its worker, not by a cancel: the worker shut down or was told the attempt is
    // not its own. Not the trainer's failure, so no restart is spent.
    return AttemptLost(record, DescribeExit(exit, run.error_message), out);
  }
  if (clean) {
    if (!all_exited) return Status::Ok();
    if (!run.done) {
      return RetryOrFail(record, "trainer exited 0 without reporting done", true,
                         exit.stderr_tail(), out);
    }
    QLORAD_RETURN_IF_ERROR(Log(record.job.id(), "info", CompletedMessage(record.job), out));
    return Finish(record, v1::JOB_STATE_COMPLETED, "", out);
  }
  if (exit.exit_code() == kBadInputExitCode) {
    std::string reason = "invalid job (trainer exit code 2)";
    if (!run.error_message.empty()) reason += ": " + run.error_message;
    if (!run.error_field.empty()) reason += " (field " + run.error_field + ")";
    // Refused for memory on this worker's GPU: another may have the room.
    if (const std::optional<int64_t> peak = PeakOfRefusal(run.error_message)) {
      return MoveOrFailRefused(record, run, rank, *peak, reason, exit.stderr_tail(), out);
    }
    return RetryOrFail(record, reason, false, exit.stderr_tail(), out);
  }
  return RetryOrFail(record, DescribeExit(exit, run.error_message), true, exit.stderr_tail(), out);
}

Status Coordinator::RetryOrFail(JobRecord& record, const std::string& reason, bool retryable,
                                const std::string& stderr_tail, Published& out) {
  v1::Job& job = record.job;
  if (!retryable || job.restarts() >= job.max_restarts()) {
    std::string error = reason;
    if (retryable) error += fmt::format(" (after {} restart(s))", job.restarts());
    QLORAD_RETURN_IF_ERROR(Log(job.id(), "error", "failed: " + error, out));
    if (!stderr_tail.empty()) error += "\nstderr:\n" + stderr_tail;
    return Finish(record, v1::JOB_STATE_FAILED, error, out);
  }
  job.set_restarts(job.restarts() + 1);
  return Requeue(
      record,
      fmt::format("failed: {} (restart {} of {})", reason, job.restarts(), job.max_restarts()),
      out);
}

Status Coordinator::AttemptLost(JobRecord& record, const std::string& reason, Published& out) {
  if (record.cancel_requested) {
    QLORAD_RETURN_IF_ERROR(Log(record.job.id(), "info", "cancelled (" + reason + ")", out));
    return Finish(record, v1::JOB_STATE_CANCELLED, "", out);
  }
  return Requeue(record, "was lost: " + reason + " (no restart spent)", out);
}

Status Coordinator::Requeue(JobRecord& record, const std::string& what, Published& out) {
  v1::Job& job = record.job;
  EndRun(job.id(), job.attempt());
  ++counters_.attempts_requeued;
  if (auto series = series_.find(job.id()); series != series_.end()) {
    // No rank runs until the next attempt starts: its old ranks' gauges would be stale.
    series->second.series.latest.clear();
    series->second.series.workers.clear();
  }
  const int ended_attempt = job.attempt();
  queue_changed_ = true;
  job.set_attempt(ended_attempt + 1);
  job.set_state(v1::JOB_STATE_QUEUED);
  job.set_worker_id("");
  QLORAD_RETURN_IF_ERROR(store_->UpdateJob(record));
  return Log(
      job.id(), "warning",
      fmt::format("attempt {} {}; retrying as attempt {}{}", ended_attempt, what, job.attempt(),
                  record.last_checkpoint.empty() ? " from the start"
                                                 : ", resuming from " + record.last_checkpoint),
      out);
}

Status Coordinator::Finish(JobRecord& record, v1::JobState state, const std::string& error,
                           Published& out) {
  EndRun(record.job.id(), record.job.attempt());
  memory_refusals_.erase(record.job.id());
  queue_changed_ = true;  // a queued job that was cancelled leaves the line
  ++counters_.jobs_finished[state];
  if (auto series = series_.find(record.job.id()); series != series_.end()) {
    series->second.finished_at = options_.now();
  }
  record.job.set_state(state);
  record.job.set_error(error);
  record.job.set_finished_unix_ms(NowUnixMs());
  QLORAD_RETURN_IF_ERROR(store_->UpdateJob(record));
  out.finished_jobs.push_back(record.job.id());
  return Status::Ok();
}

void Coordinator::EndRun(const std::string& job_id, int attempt) {
  auto it = runs_.find(job_id);
  if (it == runs_.end()) return;
  SendCancels(job_id, attempt, it->second);
  runs_.erase(it);
}

v1::Assignment Coordinator::CancelOrder(const std::string& job_id, int attempt, int rank) {
  v1::Assignment order;
  order.set_kind(v1::Assignment::KIND_CANCEL);
  order.set_job_id(job_id);
  order.set_attempt(attempt);
  order.set_rank(rank);
  return order;
}

void Coordinator::SendCancels(const std::string& job_id, int attempt, const Run& run) {
  for (size_t rank = 0; rank < run.rank_workers.size(); ++rank) {
    if (run.exited[rank]) continue;
    SendOrder(run.rank_workers[rank], CancelOrder(job_id, attempt, static_cast<int>(rank)));
  }
}

Status Coordinator::DropWorker(const std::string& worker_id, const std::string& why,
                               Published& out) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return Status::Ok();
  const WorkerState worker = std::move(it->second);
  workers_.erase(it);
  queue_changed_ = true;
  orders_cv_.notify_all();  // its Assignments stream ends
  spdlog::warn("dropping worker {} ({}): {}", worker.name, worker.id, why);
  QLORAD_RETURN_IF_ERROR(store_->SetWorkerOnline(worker.id, false));
  for (const auto& [job_id, attempt] : worker.running) {
    QLORAD_ASSIGN_OR_RETURN(JobRecord record, store_->GetJob(job_id));
    auto run = runs_.find(job_id);
    if (record.job.state() != v1::JOB_STATE_RUNNING || record.job.attempt() != attempt ||
        run == runs_.end()) {
      continue;
    }
    for (size_t rank = 0; rank < run->second.rank_workers.size(); ++rank) {
      if (run->second.rank_workers[rank] == worker.id) run->second.exited[rank] = true;
    }
    QLORAD_RETURN_IF_ERROR(
        AttemptLost(record, fmt::format("worker {} lost: {}", worker.name, why), out));
  }
  return Status::Ok();
}

}  // namespace qlorad::server
