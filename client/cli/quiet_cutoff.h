// Cancels a gRPC call once its stream has been quiet for a while. `qloractl logs` without
// --follow uses it on a live job: StreamLogs sends the stored lines in one burst and then waits
// for new ones, with no marker in between, so a pause means "everything stored was sent".
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace qlorad::cli {

class QuietCutoff {
 public:
  using Clock = std::chrono::steady_clock;

  // `now` is the clock the quiet period is measured on. Tests pass one they move by hand and call
  // Check() after moving it, so what they assert does not depend on how fast the machine is.
  QuietCutoff(grpc::ClientContext& context, std::chrono::milliseconds quiet,
              std::function<Clock::time_point()> now = Clock::now);
  ~QuietCutoff();
  QuietCutoff(const QuietCutoff&) = delete;
  QuietCutoff& operator=(const QuietCutoff&) = delete;

  // Call for every message read: the quiet period starts again.
  void Touch();
  // Whether the call was cancelled for being quiet (its CANCELLED status is then expected).
  bool fired() const;
  // Cancels the call now if it has been quiet for the whole period. The cutoff's own thread does
  // this whenever the period may have run out.
  void Check();

 private:
  void Run();
  // With mu_ held: cancels the call if the period has run out; whether it has fired.
  bool FireIfQuietLocked();

  grpc::ClientContext& context_;
  const std::chrono::milliseconds quiet_;
  const std::function<Clock::time_point()> now_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Clock::time_point last_;
  bool stop_ = false;
  bool fired_ = false;
  std::thread thread_;  // last: starts after every other member is ready
};

}  // namespace qlorad::cli
