// Ctrl-C while qloractl follows a job: the stream is cancelled and the caller says that the job
// keeps running (it is the coordinator's, not this process's), exiting 130 as shells expect.
#pragma once

#include <grpcpp/client_context.h>

#include <atomic>
#include <mutex>
#include <thread>

namespace qlorad::cli {

inline constexpr int kExitInterrupted = 130;  // 128 + SIGINT

// While it lives, SIGINT cancels `context` (from a thread of its own: a signal handler may only
// write to a pipe) instead of killing the process; the previous disposition comes back after.
class CancelOnInterrupt {
 public:
  explicit CancelOnInterrupt(grpc::ClientContext& context) : CancelOnInterrupt() {
    Track(&context);
  }
  // Tracks no call yet: a follower that makes one call after another (watch, reconnecting)
  // hands each to Track(), so that no Ctrl-C falls between two calls and kills the process.
  CancelOnInterrupt();
  ~CancelOnInterrupt();
  CancelOnInterrupt(const CancelOnInterrupt&) = delete;
  CancelOnInterrupt& operator=(const CancelOnInterrupt&) = delete;

  bool interrupted() const { return interrupted_.load(); }
  // From now on SIGINT cancels `context` (nullptr: none); one that came already cancels it now.
  // The caller keeps `context` alive until it tracks another one or this object goes.
  void Track(grpc::ClientContext* context);

 private:
  std::mutex mutex_;
  grpc::ClientContext* context_ = nullptr;  // guarded by mutex_
  std::thread waiter_;
  std::atomic<bool> interrupted_{false};  // set by waiter_ before it cancels
  bool installed_ = false;
};

}  // namespace qlorad::cli
