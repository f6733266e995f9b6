// One running qlorad-train process, seen as a sequence of TrainerEvents: its stdout events, its
// stderr lines as log lines, and finally Exit (with the last stderr lines, for crash reports).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "common/process/process_supervisor.h"
#include "common/status.h"
#include "worker/agent/trainer_event.h"

namespace qlorad::agent {

// Receives events in order. Called on the run's own thread; must not block on the network.
using EventSink = std::function<void(v1::TrainerEvent)>;

// The last `capacity` lines of a stream.
class LineTail {
 public:
  explicit LineTail(std::size_t capacity) : capacity_(capacity) {}
  void Push(std::string line);
  // The kept lines, oldest first, each ending in '\n'.
  std::string Joined() const;

 private:
  std::size_t capacity_;
  std::deque<std::string> lines_;
};

class TrainerRun {
 public:
  static constexpr std::size_t kStderrTailLines = 40;

  // Spawns the trainer; the Exit event is the last one the sink receives.
  static StatusOr<std::unique_ptr<TrainerRun>> Start(const process::SpawnSpec& spawn,
                                                     const EventContext& ctx, EventSink sink);

  const EventContext& context() const { return ctx_; }
  pid_t pid() const { return process_->pid(); }
  // The newest step the trainer reported (0 before the first), for re-registration.
  int64_t last_step() const { return last_step_.load(); }
  // SIGTERM (the trainer checkpoints and exits), SIGKILL after `grace`; Exit.cancelled = true.
  void Cancel(std::chrono::milliseconds grace) { process_->Cancel(grace); }
  bool Finished() const { return process_->Finished(); }
  // Returns once the Exit event has gone to the sink.
  process::ProcessExit Wait() { return process_->Wait(); }

 private:
  TrainerRun(EventContext ctx, EventSink sink) : ctx_(std::move(ctx)), sink_(std::move(sink)) {}

  EventContext ctx_;
  EventSink sink_;
  LineTail stderr_tail_{kStderrTailLines};  // touched only on the supervisor's thread
  std::atomic<int64_t> last_step_{0};
  std::unique_ptr<process::ProcessSupervisor> process_;
};

}  // namespace qlorad::agent
