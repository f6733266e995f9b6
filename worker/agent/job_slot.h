// The one job an agent runs at a time (an agent stands for one GPU): turns START and CANCEL
// orders into a supervised qlorad-train process whose events go to a sink.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "qlorad/v1/workers.pb.h"
#include "worker/agent/trainer_command.h"
#include "worker/agent/trainer_run.h"

namespace qlorad::agent {

class JobSlot {
 public:
  JobSlot(TrainerSetup setup, std::chrono::milliseconds grace_period, EventSink sink)
      : setup_(std::move(setup)), grace_period_(grace_period), sink_(std::move(sink)) {}
  ~JobSlot() { CancelAndWait(); }

  // START while a trainer runs is refused with a warning log line for the refused job. CANCEL
  // stops the trainer only when it runs that job and attempt (attempt -1: any attempt).
  // A START that cannot launch the trainer reports an error event and an Exit (code 127, as a
  // shell reports a command it could not run), so the coordinator can fail or retry the job.
  // A START whose spec names a path outside the worker's roots (trainer_command.h RefusedPath)
  // is not run: its error names the field, and its Exit code is 2, the trainer's own code for a
  // bad spec, so the coordinator fails the job without retrying it.
  void Handle(const v1::Assignment& assignment);
  // The job ids whose trainer is still running (for heartbeats).
  std::vector<std::string> RunningJobIds();
  // The attempt whose trainer is still running, with its pid and last step (for registering).
  std::vector<v1::RunningAttempt> RunningAttempts();
  // Cancels the running trainer (SIGTERM, grace period, SIGKILL) and returns after its Exit event.
  void CancelAndWait();

 private:
  void Start(const v1::Assignment& start);
  void Cancel(const v1::Assignment& cancel);
  void ReportStartFailure(const EventContext& ctx, const Status& why, int exit_code,
                          const std::string& field = "");

  const TrainerSetup setup_;
  const std::chrono::milliseconds grace_period_;
  const EventSink sink_;
  std::mutex mu_;
  std::unique_ptr<TrainerRun> run_;  // the current or last trainer
};

}  // namespace qlorad::agent
