// Ctrl-C while qloractl follows a job: the stream is cancelled and the caller says that the job
// keeps running (it is the coordinator's, not this process's), exiting 130 as shells expect.
#pragma once

#include <grpcpp/client_context.h>

#include <atomic>
#include <thread>

namespace qlorad::cli {

inline constexpr int kExitInterrupted = 130;  // 128 + SIGINT

// While it lives, SIGINT cancels `context` (from a thread of its own: a signal handler may only
// write to a pipe) instead of killing the process; the previous disposition comes back after.
class CancelOnInterrupt {
 public:
  explicit CancelOnInterrupt(grpc::ClientContext& context);
  ~CancelOnInterrupt();
  CancelOnInterrupt(const CancelOnInterrupt&) = delete;
  CancelOnInterrupt& operator=(const CancelOnInterrupt&) = delete;

  bool interrupted() const { return interrupted_.load(); }

 private:
  std::thread waiter_;
  std::atomic<bool> interrupted_{false};  // set by waiter_ before it cancels
  bool installed_ = false;
};

}  // namespace qlorad::cli
