// Runs one child process and watches it until it has exited: its stdout and stderr arrive line by
// line, cancelling sends SIGTERM to its process group and SIGKILL after a grace period.
// Used by the agent for qlorad-train (one per job) and short probes such as nvidia-smi, and by
// `qlorad-train launch` for its ranks. Torch-free and gRPC-free, so both sides link it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/status.h"

namespace qlorad::process {

struct SpawnSpec {
  std::vector<std::string> argv{};       // argv[0] is the program
  std::vector<std::string> extra_env{};  // "KEY=VALUE", added to (or replacing in) our environment
  std::string cwd{};                     // empty: our working directory
  bool search_path = false;              // look argv[0] up in PATH (for tools like nvidia-smi)
};

struct ProcessExit {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;      // the signal that killed it, 0 when it exited
  bool cancelled = false;
};

// Called on the supervisor's own thread, one at a time and in the order the bytes arrived;
// on_exit is the last call, after both pipes are drained.
struct ProcessCallbacks {
  std::function<void(std::string_view line)> on_stdout_line;
  std::function<void(std::string_view line)> on_stderr_line;
  std::function<void(const ProcessExit&)> on_exit;
};

class ProcessSupervisor {
 public:
  // Spawns the child in its own process group (so a cancel reaches everything it started) with
  // stdin from /dev/null and default signal dispositions.
  static StatusOr<std::unique_ptr<ProcessSupervisor>> Start(const SpawnSpec& spec,
                                                            ProcessCallbacks callbacks);
  // A supervisor destroyed while its child runs kills the group at once and waits.
  ~ProcessSupervisor();
  ProcessSupervisor(const ProcessSupervisor&) = delete;
  ProcessSupervisor& operator=(const ProcessSupervisor&) = delete;

  pid_t pid() const { return pid_; }

  // SIGTERM to the process group now, SIGKILL after `grace` if it is still there. A second call
  // can only shorten the grace period.
  void Cancel(std::chrono::milliseconds grace);

  // Sends `sig` to the process group (as a terminal would), unless the child is already reaped.
  void Signal(int sig);

  // Blocks until the child has exited, its pipes are drained and on_exit has returned.
  ProcessExit Wait();
  // Like Wait, but gives up after `timeout` (the child keeps running).
  std::optional<ProcessExit> WaitFor(std::chrono::milliseconds timeout);
  bool Finished() const;

 private:
  ProcessSupervisor(pid_t pid, int stdout_fd, int stderr_fd, int pid_fd, int wake_fd,
                    ProcessCallbacks callbacks);
  void Loop();
  // Signals the group unless the child is already reaped (its pid could then belong to another
  // process). Caller holds mu_.
  void SignalGroupLocked(int sig);
  // SIGKILLs the group once a cancel's grace period is over; returns how long poll may wait
  // before that deadline (-1: no deadline pending).
  int KillIfGraceOver();

  const pid_t pid_;
  int stdout_fd_;
  int stderr_fd_;
  int pid_fd_;   // pidfd: readable once the child has exited
  int wake_fd_;  // eventfd: wakes the poll loop when Cancel changes the kill deadline
  ProcessCallbacks callbacks_;

  mutable std::mutex mu_;
  std::condition_variable finished_cv_;
  bool reaped_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  bool killed_ = false;
  std::optional<std::chrono::steady_clock::time_point> kill_deadline_;
  ProcessExit exit_;
  std::thread thread_;
};

}  // namespace qlorad::process
