// A steady clock that moves only when the test moves it, for code that takes its clock as a
// function (CoordinatorOptions::now, QuietCutoff): timeouts then follow the test's steps, not the
// speed of the machine that runs it. Other threads may read it while the test moves it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

namespace qlorad::testing {

class ManualClock {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  time_point Now() const { return start_ + std::chrono::nanoseconds(elapsed_ns_.load()); }
  void Advance(std::chrono::nanoseconds d) { elapsed_ns_ += d.count(); }
  // The clock as the code under test takes it; the clock must outlive that code.
  std::function<time_point()> AsFunction() const {
    return [this] { return Now(); };
  }

 private:
  // Starts at the real time, so a value that meets a real clock somewhere is still plausible.
  const time_point start_ = std::chrono::steady_clock::now();
  std::atomic<int64_t> elapsed_ns_{0};
};

}  // namespace qlorad::testing
