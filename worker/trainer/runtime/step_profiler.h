// A Kineto trace (CPU ops, CUDA kernels and NCCL collectives on their streams) of a few training
// steps, to see where a step's time goes on a real GPU: with QLORAD_PROFILE=<prefix> the trainer
// records steps [QLORAD_PROFILE_FIRST, QLORAD_PROFILE_FIRST + QLORAD_PROFILE_STEPS) (default: 3
// steps from the 6th the run executes, after warm-up) and writes <prefix>-rank<r>.json, a Chrome
// trace that bench/parallel/trace_summary.py condenses (its folder is made if missing). Off by
// default; it costs nothing then.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace qlorad::trainer {

class StepProfiler {
 public:
  // `first_step`: the step this run starts at (a resumed run starts late).
  StepProfiler(int rank, int64_t first_step, at::Device device);
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;
  // A recording still on (a run that ended early by an error) is switched off without a trace:
  // a profiler left on past its owner crashed the process as it exited.
  ~StepProfiler();

  void BeginStep(int64_t step);
  // Ends `step`; after the last profiled one, waits for the device and writes the trace. Returns
  // the trace's path then, else "".
  std::string EndStep(int64_t step);
  // For a run whose steps ended inside the profiled ones: writes the trace of the steps recorded
  // so far and returns its path; "" when nothing is being recorded.
  std::string Stop();

 private:
  at::Device device_;
  std::string path_;  // empty: disabled
  int64_t begin_ = 0;
  int64_t end_ = 0;
  bool recording_ = false;
};

}  // namespace qlorad::trainer
