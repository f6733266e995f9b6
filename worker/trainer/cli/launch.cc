#include "worker/trainer/cli/launch.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/process/free_port.h"
#include "common/process/process_supervisor.h"
#include "worker/trainer/runtime/exit_codes.h"

namespace qlorad::trainer {

namespace {

using process::ProcessExit;
using process::ProcessSupervisor;

// After the first failure the others get SIGTERM (and SIGCONT, should one be stopped); one stuck
// in a collective with a dead peer may never act on it, so SIGKILL follows after this long.
constexpr std::chrono::seconds kStopGrace(10);

// Passed on to every rank. Each rank runs in its own process group, so what a terminal sends its
// foreground group (Ctrl-C, a hangup) reaches the ranks only through us.
constexpr std::array<int, 3> kForwardedSignals = {SIGTERM, SIGINT, SIGHUP};

// The signal handler may only store the signal and write to the wake-up eventfd.
std::atomic<int> g_forward_signal{0};
std::atomic<int> g_wake_fd{-1};

void OnForwardedSignal(int sig) {
  const int saved_errno = errno;
  g_forward_signal = sig;
  const uint64_t one = 1;
  if (const int fd = g_wake_fd.load(); fd >= 0) {
    [[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof(one));
  }
  errno = saved_errno;
}

// What the launcher waits for: a rank's exit (reported from its supervisor's thread) or a signal
// to pass on (from the handler). Both wake the launcher through one eventfd, the only thing it
// blocks on: a condition variable cannot be notified from a signal handler. The handlers are
// installed for the object's lifetime, so one Launch runs at a time in a process.
class Inbox {
 public:
  struct Mail {
    int signal = 0;                                    // to pass on, 0 if none
    std::vector<std::pair<int, ProcessExit>> exits{};  // rank, how it ended
  };

  Inbox() : fd_(::eventfd(0, EFD_CLOEXEC)) {
    if (fd_ < 0) return;
    g_forward_signal = 0;
    g_wake_fd = fd_;
    struct sigaction action {};
    action.sa_handler = OnForwardedSignal;
    // SA_RESTART: the supervisors' threads write forwarded lines meanwhile, and a write that
    // failed with EINTR would put std::cout or std::cerr in a failed state.
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < kForwardedSignals.size(); ++i) {
      ::sigaction(kForwardedSignals[i], &action, &previous_[i]);
    }
  }
  ~Inbox() {
    if (fd_ < 0) return;
    for (size_t i = 0; i < kForwardedSignals.size(); ++i) {
      ::sigaction(kForwardedSignals[i], &previous_[i], nullptr);
    }
    g_wake_fd = -1;
    ::close(fd_);
  }
  Inbox(const Inbox&) = delete;
  Inbox& operator=(const Inbox&) = delete;

  bool ok() const { return fd_ >= 0; }

  // Called on a rank's supervisor thread, after the rank's output has been forwarded.
  void Exited(int rank, const ProcessExit& exit) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      exits_.emplace_back(rank, exit);
    }
    Wake();
  }

  // Blocks until something arrived; returns everything that did since the last call.
  Mail Wait() {
    uint64_t count = 0;
    while (::read(fd_, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
    Mail mail;
    mail.signal = g_forward_signal.exchange(0);
    std::lock_guard<std::mutex> lock(mu_);
    mail.exits.swap(exits_);
    return mail;
  }

 private:
  void Wake() {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(fd_, &one, sizeof(one));
  }

  const int fd_;
  std::array<struct sigaction, kForwardedSignals.size()> previous_{};
  std::mutex mu_;
  std::vector<std::pair<int, ProcessExit>> exits_;
};

// Rank 0's stdout passes through as it is (the job's one event stream); everything else goes to
// stderr prefixed "[rank R] ". One line at a time: the ranks' supervisor threads write at once.
class Output {
 public:
  void Line(int rank, bool is_stdout, std::string_view line) {
    std::lock_guard<std::mutex> lock(mu_);
    if (rank == 0 && is_stdout) {
      std::cout << line << '\n' << std::flush;
    } else {
      std::cerr << "[rank " << rank << "] " << line << '\n' << std::flush;
    }
  }
  void Say(const std::string& message) {
    std::lock_guard<std::mutex> lock(mu_);
    std::cerr << "launch: " << message << '\n' << std::flush;
  }

 private:
  std::mutex mu_;
};

process::SpawnSpec RankSpec(const LaunchOptions& o, int rank, const std::string& rendezvous) {
  process::SpawnSpec spec;
  spec.argv = {o.self,
               "run",
               o.spec_path,
               "--rank",
               std::to_string(rank),
               "--world-size",
               std::to_string(o.nproc),
               "--rendezvous",
               rendezvous};
  if (o.json) spec.argv.push_back("--json");
  if (!o.device.empty()) spec.argv.insert(spec.argv.end(), {"--device", o.device});
  if (!o.resume.empty()) spec.argv.insert(spec.argv.end(), {"--resume", o.resume});
  spec.extra_env = {"QLORAD_LOCAL_RANK=" + std::to_string(rank),
                    "QLORAD_LOCAL_WORLD_SIZE=" + std::to_string(o.nproc)};  // see cpu_threads.h
  return spec;
}

// The shell's convention: 128 + the signal for a rank a signal killed.
int ExitCodeOf(const ProcessExit& exit) {
  return exit.signal != 0 ? 128 + exit.signal : exit.exit_code;
}

}  // namespace

int Launch(const LaunchOptions& o) {
  Output output;
  const StatusOr<int> port = process::FreeTcpPort();
  if (!port.ok()) {
    output.Say(port.status().message());
    return kExitFailure;
  }
  const std::string rendezvous = "127.0.0.1:" + std::to_string(*port);
  // Before the first rank starts, so that a signal meanwhile is passed on rather than lost.
  Inbox inbox;
  if (!inbox.ok()) {
    output.Say(std::string("eventfd: ") + std::strerror(errno));
    return kExitFailure;
  }

  std::vector<std::unique_ptr<ProcessSupervisor>> ranks;
  for (int r = 0; r < o.nproc; ++r) {
    process::ProcessCallbacks callbacks;
    callbacks.on_stdout_line = [&output, r](std::string_view line) { output.Line(r, true, line); };
    callbacks.on_stderr_line = [&output, r](std::string_view line) { output.Line(r, false, line); };
    callbacks.on_exit = [&inbox, r](const ProcessExit& exit) { inbox.Exited(r, exit); };
    auto started = ProcessSupervisor::Start(RankSpec(o, r, rendezvous), std::move(callbacks));
    if (!started.ok()) {
      output.Say("rank " + std::to_string(r) + ": " + started.status().message() +
                 "; stopping the others");
      for (auto& rank : ranks) rank->Cancel(kStopGrace);
      for (auto& rank : ranks) rank->Wait();
      return kExitFailure;
    }
    ranks.push_back(std::move(started).value());
  }

  int result = kExitDone;
  bool failed = false;
  for (size_t exited = 0; exited < ranks.size();) {
    const Inbox::Mail mail = inbox.Wait();
    if (mail.signal != 0) {
      // The ranks agree to stop at the same step (SIGTERM), or all end.
      for (auto& rank : ranks) rank->Signal(mail.signal);
    }
    for (const auto& [r, exit] : mail.exits) {
      ++exited;
      const int code = ExitCodeOf(exit);
      if (failed || code == kExitDone) continue;
      if (code == kExitStopped) {
        result = kExitStopped;
        continue;
      }
      // The first failure is the job's: stop the others, which would wait on it forever. Cancel
      // also continues a stopped rank (the usual cause of a peer's timeout) so it acts on SIGTERM.
      failed = true;
      result = code;
      output.Say("rank " + std::to_string(r) + " exited with " + std::to_string(code) +
                 "; stopping the others");
      for (auto& rank : ranks) rank->Cancel(kStopGrace);
    }
  }
  return result;
}

}  // namespace qlorad::trainer
