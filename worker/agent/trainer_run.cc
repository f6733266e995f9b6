#include "worker/agent/trainer_run.h"

#include <spdlog/spdlog.h>

namespace qlorad::agent {

void LineTail::Push(std::string line) {
  lines_.push_back(std::move(line));
  if (lines_.size() > capacity_) lines_.pop_front();
}

std::string LineTail::Joined() const {
  std::string out;
  for (const std::string& line : lines_) {
    out += line;
    out += '\n';
  }
  return out;
}

StatusOr<std::unique_ptr<TrainerRun>> TrainerRun::Start(const process::SpawnSpec& spawn,
                                                        const EventContext& ctx, EventSink sink) {
  std::unique_ptr<TrainerRun> run(new TrainerRun(ctx, std::move(sink)));
  TrainerRun* self = run.get();
  process::ProcessCallbacks callbacks;
  callbacks.on_stdout_line = [self](std::string_view line) {
    v1::TrainerEvent event = TrainerEventFromLine(line, self->ctx_, UnixMillisNow());
    if (event.has_metrics()) self->last_step_.store(event.metrics().step());
    self->sink_(std::move(event));
  };
  callbacks.on_stderr_line = [self](std::string_view line) {
    self->stderr_tail_.Push(std::string(line));
    self->sink_(LogEvent(self->ctx_, "info", std::string(line), "trainer", UnixMillisNow()));
  };
  callbacks.on_exit = [self](const process::ProcessExit& exit) {
    spdlog::info("job {} attempt {} rank {}: trainer exited (code {}, signal {}{})",
                 self->ctx_.job_id, self->ctx_.attempt, self->ctx_.rank, exit.exit_code,
                 exit.signal, exit.cancelled ? ", cancelled" : "");
    v1::TrainerEvent event;
    event.set_job_id(self->ctx_.job_id);
    event.set_attempt(self->ctx_.attempt);
    event.set_rank(self->ctx_.rank);
    v1::TrainerEvent::Exit* e = event.mutable_exit();
    e->set_exit_code(exit.exit_code);
    e->set_signal(exit.signal);
    e->set_stderr_tail(self->stderr_tail_.Joined());
    e->set_cancelled(exit.cancelled);
    self->sink_(std::move(event));
  };
  QLORAD_ASSIGN_OR_RETURN(run->process_,
                          process::ProcessSupervisor::Start(spawn, std::move(callbacks)));
  return run;
}

}  // namespace qlorad::agent
