// Cancels a gRPC call once its stream has been quiet for a while. `qloractl logs` without
// --follow uses it on a live job: StreamLogs sends the stored lines in one burst and then waits
// for new ones, with no marker in between, so a pause means "everything stored was sent".
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace qlorad::cli {

class QuietCutoff {
 public:
  QuietCutoff(grpc::ClientContext& context, std::chrono::milliseconds quiet);
  ~QuietCutoff();
  QuietCutoff(const QuietCutoff&) = delete;
  QuietCutoff& operator=(const QuietCutoff&) = delete;

  // Call for every message read: the quiet period starts again.
  void Touch();
  // Whether the call was cancelled for being quiet (its CANCELLED status is then expected).
  bool fired() const;

 private:
  void Run();

  grpc::ClientContext& context_;
  const std::chrono::milliseconds quiet_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::chrono::steady_clock::time_point last_;
  bool stop_ = false;
  bool fired_ = false;
  std::thread thread_;  // last: starts after every other member is ready
};

}  // namespace qlorad::cli
