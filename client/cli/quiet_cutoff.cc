#include "client/cli/quiet_cutoff.h"

namespace qlorad::cli {

QuietCutoff::QuietCutoff(grpc::ClientContext& context, std::chrono::milliseconds quiet,
                         std::function<Clock::time_point()> now)
    : context_(context),
      quiet_(quiet),
      now_(std::move(now)),
      last_(now_()),
      thread_(&QuietCutoff::Run, this) {}

QuietCutoff::~QuietCutoff() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void QuietCutoff::Touch() {
  std::lock_guard lock(mu_);
  last_ = now_();
}

bool QuietCutoff::fired() const {
  std::lock_guard lock(mu_);
  return fired_;
}

void QuietCutoff::Check() {
  std::lock_guard lock(mu_);
  FireIfQuietLocked();
}

bool QuietCutoff::FireIfQuietLocked() {
  if (!fired_ && now_() >= last_ + quiet_) {
    fired_ = true;
    context_.TryCancel();
  }
  return fired_;
}

void QuietCutoff::Run() {
  std::unique_lock lock(mu_);
  while (!stop_ && !FireIfQuietLocked()) {
    // A wait for what is left rather than until a time point: `now_` need not be the clock
    // condition variables wait on.
    cv_.wait_for(lock, last_ + quiet_ - now_());
  }
}

}  // namespace qlorad::cli
