#include "worker/trainer/runtime/watchdog.h"

#include <cstdlib>
#include <sstream>

#include "worker/trainer/runtime/exit_codes.h"

namespace qlorad::trainer {

namespace {

// How long the report may take before the process ends without it (its stream may be a full
// pipe nobody reads, or locked by a thread that is stuck writing to it).
constexpr std::chrono::seconds kReportGrace{2};

}  // namespace

Watchdog::Watchdog(int rank, double timeout_s, std::function<void(const std::string&)> report)
    : rank_(rank),
      timeout_s_(timeout_s),
      timeout_(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(timeout_s))),
      report_(std::move(report)),
      deadline_(std::chrono::steady_clock::now() + timeout_),
      thread_([this] { Watch(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Watchdog::Beat(std::string doing, int64_t completed_step) {
  std::lock_guard<std::mutex> lock(mu_);
  doing_ = std::move(doing);
  completed_step_ = completed_step;
  deadline_ = std::chrono::steady_clock::now() + timeout_;
  // No notify: the watcher wakes at the old deadline and waits again until the new one.
}

void Watchdog::Watch() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (std::chrono::steady_clock::now() < deadline_) {
      cv_.wait_until(lock, deadline_);
      continue;
    }
    std::ostringstream line;
    line << "watchdog: rank " << rank_ << " made no progress for " << timeout_s_
         << " s (parallel.timeout_s) while " << doing_ << " (last completed step "
         << completed_step_
         << "): this rank or a peer it waits on is stuck (a stopped or hung process, device or "
            "collective), or one step takes longer than parallel.timeout_s; exiting with code "
         << kExitHung << " so the job fails and can resume from its last checkpoint";
    Fire(line.str());
  }
}

void Watchdog::Fire(const std::string& line) {
  std::thread([report = report_, line] {
    report(line);
    std::_Exit(kExitHung);
  }).detach();
  std::this_thread::sleep_for(kReportGrace);
  std::_Exit(kExitHung);
}

}  // namespace qlorad::trainer
