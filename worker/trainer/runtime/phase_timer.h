// Where a training step's time goes, for profiling on a real GPU: with QLORAD_PHASE_TIMING=1 the
// trainer synchronizes the device at the end of each phase of a step (data, forward+backward,
// gradient reduction, clipping, optimizer, all-reduce+readback, bookkeeping) and logs the mean
// milliseconds per phase, over the steps after the first, when the run ends. The synchronizations
// stop the host from running ahead of the device, so the sum is an upper bound on the unprofiled
// step; off by default.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace qlorad::trainer {

class PhaseTimer {
 public:
  PhaseTimer(at::Device device, bool enabled);

  bool enabled() const { return enabled_; }
  // Starts a step: the time until the first End() belongs to that phase.
  void StartStep();
  // Ends the phase `name` of the current step (waits for the device first).
  void End(const char* name);
  // "data 1.2, forward+backward 140.3, ..." in ms per step; empty when disabled or no steps ran.
  std::string Summary() const;

 private:
  using Clock = std::chrono::steady_clock;
  at::Device device_;
  bool enabled_;
  int64_t started_ = 0;  // steps begun; the first is not counted
  Clock::time_point last_;
  std::vector<std::pair<std::string, double>> seconds_;  // in order of first use
};

// QLORAD_PHASE_TIMING is set to something other than "" or "0".
bool PhaseTimingRequested();

}  // namespace qlorad::trainer
