// A rank that stops making progress must fail its job, not hold its devices forever: a peer that
// hangs leaves the others blocked in a collective, and a stuck device or file system blocks the
// rank itself. The training loop beats the watchdog at every step and before long phases
// (checkpoint and adapter saves); when no beat comes within parallel.timeout_s, the watchdog
// reports one line naming the rank, the last completed step, what the rank was doing and the
// timeout, and ends the process with kExitHung. The launcher or the worker agent then stops the
// other ranks and the coordinator retries the job from its last checkpoint.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace qlorad::trainer {

class Watchdog {
 public:
  // Starts watching now; `report` receives the line on the watchdog's own thread. The process
  // then ends with std::_Exit: the other threads are stuck, so no static destructors may run
  // (they would wait on them), and a report stuck behind a blocked output stream is abandoned
  // after a moment rather than keeping the process alive.
  Watchdog(int rank, double timeout_s, std::function<void(const std::string&)> report);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Progress: the rank has completed `completed_step` steps and is now `doing` ("running step 5",
  // "saving the checkpoint of step 4"), which must end, or beat again, within the timeout.
  void Beat(std::string doing, int64_t completed_step);

 private:
  void Watch();
  [[noreturn]] void Fire(const std::string& line);

  const int rank_;
  const double timeout_s_;
  const std::chrono::steady_clock::duration timeout_;
  const std::function<void(const std::string&)> report_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::chrono::steady_clock::time_point deadline_;
  std::string doing_ = "starting";
  int64_t completed_step_ = 0;
  bool stop_ = false;
  std::thread thread_;  // last: it reads everything above
};

}  // namespace qlorad::trainer
