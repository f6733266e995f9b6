#include "worker/trainer/runtime/step_profiler.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <set>

namespace qlorad::trainer {

namespace {

using torch::profiler::impl::ActivityType;

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::atoll(value) : fallback;
}

std::set<ActivityType> Activities(at::Device device) {
  std::set<ActivityType> activities{ActivityType::CPU};
  if (device.is_cuda()) activities.insert(ActivityType::CUDA);
  return activities;
}

}  // namespace

StepProfiler::StepProfiler(int rank, int64_t first_step, at::Device device) : device_(device) {
  const char* prefix = std::getenv("QLORAD_PROFILE");
  if (prefix == nullptr || *prefix == '\0') return;
  path_ = std::string(prefix) + "-rank" + std::to_string(rank) + ".json";
  // The trace's folder may not exist yet, and Kineto writes nothing, without a word, where it
  // cannot open the file.
  std::error_code ignored;
  std::filesystem::create_directories(std::filesystem::path(path_).parent_path(), ignored);
  begin_ = first_step + EnvInt("QLORAD_PROFILE_FIRST", 5);
  end_ = begin_ + std::max<int64_t>(1, EnvInt("QLORAD_PROFILE_STEPS", 3));
}

void StepProfiler::BeginStep(int64_t step) {
  if (path_.empty() || step != begin_) return;
  const std::set<ActivityType> activities = Activities(device_);
  // Input shapes (QLORAD_PROFILE_SHAPES=1) let trace_summary.py --by-op name each GEMM's shape;
  // off by default, as recording them slows the host.
  const torch::profiler::impl::ProfilerConfig config(
      torch::profiler::impl::ProfilerState::KINETO,
      /*report_input_shapes=*/EnvInt("QLORAD_PROFILE_SHAPES", 0) != 0);
  torch::autograd::profiler::prepareProfiler(config, activities);
  torch::autograd::profiler::enableProfiler(config, activities);
  recording_ = true;
}

std::string StepProfiler::EndStep(int64_t step) {
  if (!recording_ || step + 1 != end_) return "";
  return Stop();
}

std::string StepProfiler::Stop() {
  if (!recording_) return "";
  if (device_.is_cuda()) at::accelerator::synchronizeDevice(device_.index());
  recording_ = false;
  torch::autograd::profiler::disableProfiler()->save(path_);
  return path_;
}

StepProfiler::~StepProfiler() {
  if (!recording_) return;
  try {
    torch::autograd::profiler::disableProfiler();
  } catch (const std::exception&) {
    // Nothing to report to from a destructor; the profile is lost either way.
  }
}

}  // namespace qlorad::trainer
