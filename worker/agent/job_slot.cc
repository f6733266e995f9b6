#include "worker/agent/job_slot.h"

#include <spdlog/spdlog.h>

namespace qlorad::agent {
namespace {

constexpr int kCouldNotRunExitCode = 127;
constexpr int kBadSpecExitCode = 2;  // qlorad-train's exit code for a spec it refuses

EventContext ContextOf(const v1::Assignment& a) {
  return {a.job_id(), a.attempt(), a.rank()};
}

}  // namespace

void JobSlot::Handle(const v1::Assignment& assignment) {
  switch (assignment.kind()) {
    case v1::Assignment::KIND_START:
      Start(assignment);
      return;
    case v1::Assignment::KIND_CANCEL:
      Cancel(assignment);
      return;
    default:
      spdlog::warn("ignoring assignment of unknown kind {} for job {}",
                   static_cast<int>(assignment.kind()), assignment.job_id());
  }
}

void JobSlot::Start(const v1::Assignment& start) {
  const EventContext ctx = ContextOf(start);
  std::lock_guard<std::mutex> lock(mu_);
  if (run_ && !run_->Finished()) {
    const std::string why = "worker busy with job " + run_->context().job_id + " attempt " +
                            std::to_string(run_->context().attempt) + "; START of job " +
                            ctx.job_id + " attempt " + std::to_string(ctx.attempt) + " ignored";
    spdlog::warn("{}", why);
    sink_(LogEvent(ctx, "warning", why, "worker", UnixMillisNow()));
    return;
  }
  run_.reset();  // joins the finished trainer's supervisor thread
  if (auto refused = RefusedPath(setup_, start)) {
    ReportStartFailure(ctx, refused->ToStatus(), kBadSpecExitCode, refused->field);
    return;
  }
  auto spec_path = WriteJobSpec(setup_, start);
  if (!spec_path.ok()) {
    ReportStartFailure(ctx, spec_path.status(), kCouldNotRunExitCode);
    return;
  }
  const process::SpawnSpec spawn = TrainerSpawnSpec(setup_, start, *spec_path);
  auto run = TrainerRun::Start(spawn, ctx, sink_);
  if (!run.ok()) {
    ReportStartFailure(ctx, run.status(), kCouldNotRunExitCode);
    return;
  }
  run_ = std::move(run).value();
  spdlog::info("job {} attempt {} rank {}: started {} (pid {})", ctx.job_id, ctx.attempt, ctx.rank,
               setup_.trainer.string(), run_->pid());
}

void JobSlot::ReportStartFailure(const EventContext& ctx, const Status& why, int exit_code,
                                 const std::string& field) {
  spdlog::error("job {} attempt {}: cannot start the trainer: {}", ctx.job_id, ctx.attempt,
                why.ToString());
  v1::TrainerEvent error;
  error.set_job_id(ctx.job_id);
  error.set_attempt(ctx.attempt);
  error.set_rank(ctx.rank);
  error.mutable_error()->set_message("worker cannot start the trainer: " + why.message());
  error.mutable_error()->set_field(field);
  sink_(error);
  v1::TrainerEvent exit = error;
  exit.mutable_exit()->set_exit_code(exit_code);
  exit.mutable_exit()->set_stderr_tail(why.message() + "\n");
  sink_(exit);
}

void JobSlot::Cancel(const v1::Assignment& cancel) {
  std::lock_guard<std::mutex> lock(mu_);
  // The attempt matters: a stop order for an attempt that is no longer current must not end a
  // newer attempt of the same job.
  if (!run_ || run_->Finished() || run_->context().job_id != cancel.job_id() ||
      (cancel.attempt() >= 0 && run_->context().attempt != cancel.attempt())) {
    spdlog::info("CANCEL of job {} attempt {}: not running here, nothing to do", cancel.job_id(),
                 cancel.attempt());
    return;
  }
  spdlog::info("job {}: cancelling (SIGTERM, SIGKILL after {} ms)", cancel.job_id(),
               grace_period_.count());
  run_->Cancel(grace_period_);
}

std::vector<std::string> JobSlot::RunningJobIds() {
  std::lock_guard<std::mutex> lock(mu_);
  if (run_ && !run_->Finished()) return {run_->context().job_id};
  return {};
}

std::vector<v1::RunningAttempt> JobSlot::RunningAttempts() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!run_ || run_->Finished()) return {};
  v1::RunningAttempt attempt;
  attempt.set_job_id(run_->context().job_id);
  attempt.set_attempt(run_->context().attempt);
  attempt.set_rank(run_->context().rank);
  attempt.set_last_step(run_->last_step());
  attempt.set_pid(run_->pid());
  return {attempt};
}

void JobSlot::CancelAndWait() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!run_) return;
  if (!run_->Finished()) {
    spdlog::info("job {}: stopping its trainer (SIGTERM, SIGKILL after {} ms)",
                 run_->context().job_id, grace_period_.count());
    run_->Cancel(grace_period_);
  }
  run_->Wait();
}

}  // namespace qlorad::agent
