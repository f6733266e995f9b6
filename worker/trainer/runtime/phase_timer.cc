#include "worker/trainer/runtime/phase_timer.h"

#include <ATen/DeviceAccelerator.h>

#include <cstdlib>
#include <sstream>

namespace qlorad::trainer {

PhaseTimer::PhaseTimer(at::Device device, bool enabled) : device_(device), enabled_(enabled) {}

bool PhaseTimingRequested() {
  const char* value = std::getenv("QLORAD_PHASE_TIMING");
  return value != nullptr && *value != '\0' && std::string(value) != "0";
}

void PhaseTimer::StartStep() {
  if (!enabled_) return;
  if (device_.is_cuda()) at::accelerator::synchronizeDevice(device_.index());
  ++started_;
  last_ = Clock::now();
}

void PhaseTimer::End(const char* name) {
  if (!enabled_) return;
  if (device_.is_cuda()) at::accelerator::synchronizeDevice(device_.index());
  const Clock::time_point now = Clock::now();
  const double seconds = std::chrono::duration<double>(now - last_).count();
  last_ = now;
  if (started_ == 1) return;  // the first step pays one-time setup (allocator, NCCL, cuBLAS)
  for (auto& [phase, total] : seconds_) {
    if (phase == name) {
      total += seconds;
      return;
    }
  }
  seconds_.emplace_back(name, seconds);
}

std::string PhaseTimer::Summary() const {
  const int64_t steps = started_ - 1;
  if (!enabled_ || steps <= 0) return "";
  std::ostringstream out;
  out.precision(2);
  out << std::fixed;
  double sum = 0;
  for (size_t i = 0; i < seconds_.size(); ++i) {
    const auto& [phase, total] = seconds_[i];
    out << (i == 0 ? "" : ", ") << phase << " " << 1e3 * total / static_cast<double>(steps);
    sum += total;
  }
  out << " (sum " << 1e3 * sum / static_cast<double>(steps) << ") ms per step over " << steps
      << " steps after the first";
  return out.str();
}

}  // namespace qlorad::trainer
