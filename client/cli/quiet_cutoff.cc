#include "client/cli/quiet_cutoff.h"

namespace qlorad::cli {

QuietCutoff::QuietCutoff(grpc::ClientContext& context, std::chrono::milliseconds quiet)
    : context_(context),
      quiet_(quiet),
      last_(std::chrono::steady_clock::now()),
      thread_([this] { Run(); }) {}

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
  last_ = std::chrono::steady_clock::now();
}

bool QuietCutoff::fired() const {
  std::lock_guard lock(mu_);
  return fired_;
}

void QuietCutoff::Run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    const auto deadline = last_ + quiet_;
    if (std::chrono::steady_clock::now() >= deadline) {
      fired_ = true;
      context_.TryCancel();
      return;
    }
    cv_.wait_until(lock, deadline);
  }
}

}  // namespace qlorad::cli
