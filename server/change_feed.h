// "Something changed" for the dashboard's overview stream: a counter the coordinator bumps
// after each change it publishes (job events, workers joining, leaving or heartbeating), and a
// wait for the next bump. It carries no data: a waiter re-reads what it shows, so bumps that
// come while it is busy fold into one.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace qlorad::server {

class ChangeFeed {
 public:
  uint64_t version() const {
    std::lock_guard<std::mutex> lock(mu_);
    return version_;
  }

  void Bump() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++version_;
    }
    cv_.notify_all();
  }

  // Waits until the version passes `seen`, the feed closes or `timeout` passes; returns the
  // version then.
  uint64_t WaitPast(uint64_t seen, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return version_ > seen || closed_; });
    return version_;
  }

  // The coordinator is stopping: waiters return at once, now and later.
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

  bool closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t version_ = 0;
  bool closed_ = false;
};

}  // namespace qlorad::server
