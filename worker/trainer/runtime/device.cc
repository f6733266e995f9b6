#include "worker/trainer/runtime/device.h"

#include <ATen/DeviceAccelerator.h>
#include <torch/cuda.h>

#include <cstdlib>

#ifdef QLORAD_HAVE_CUDA_ALLOCATOR
#include "worker/trainer/runtime/cuda_memory.h"
#endif

namespace qlorad::trainer {

namespace {

c10::DeviceIndex LocalCudaIndex() {
  const char* local_rank = std::getenv("QLORAD_LOCAL_RANK");
  const int count = static_cast<int>(torch::cuda::device_count());
  if (local_rank == nullptr || count == 0) return 0;
  return static_cast<c10::DeviceIndex>(std::atoi(local_rank) % count);
}

}  // namespace

StatusOr<at::Device> ResolveDevice(DeviceChoice requested, const std::string& field) {
  const bool cuda = torch::cuda::is_available();
  switch (requested) {
    case DeviceChoice::kCpu:
      return at::Device(at::kCPU);
    case DeviceChoice::kCuda:
      if (!cuda) {
        return FailedPrecondition(field + ": cuda requested but no CUDA device is visible");
      }
      return at::Device(at::kCUDA, LocalCudaIndex());
    case DeviceChoice::kAuto:
      break;
  }
  return cuda ? at::Device(at::kCUDA, LocalCudaIndex()) : at::Device(at::kCPU);
}

void FillVram(at::Device device, events::Metrics* metrics) {
  if (!device.is_cuda()) return;
  const auto stats = at::accelerator::getDeviceStats(device.index());
  constexpr size_t kAllPools = 0;  // StatType::AGGREGATE
  metrics->vram_allocated_bytes = stats.allocated_bytes[kAllPools].current;
  metrics->vram_reserved_bytes = stats.reserved_bytes[kAllPools].current;
  metrics->vram_peak_bytes = stats.allocated_bytes[kAllPools].peak;
}

std::optional<DeviceMemory> MemoryOf(at::Device device) {
  if (!device.is_cuda()) return std::nullopt;
  constexpr size_t kAllPools = 0;  // StatType::AGGREGATE
  const auto stats = at::accelerator::getDeviceStats(device.index());
  const auto [free, total] = at::accelerator::getMemoryInfo(device.index());
  (void)free;
  return DeviceMemory{stats.allocated_bytes[kAllPools].current, static_cast<int64_t>(total)};
}

void ReleaseCachedMemory(at::Device device) {
  if (device.is_cuda()) at::accelerator::emptyCache();
}

Status LimitMemoryFraction(at::Device device, double fraction) {
  if (!(fraction > 0 && fraction <= 1)) {
    return InvalidArgument("must be in (0, 1], got " + std::to_string(fraction));
  }
  if (!device.is_cuda()) {
    return FailedPrecondition("only a CUDA device has a memory fraction, not " + device.str());
  }
#ifdef QLORAD_HAVE_CUDA_ALLOCATOR
  SetCudaMemoryFraction(fraction, device.index());
  return Status::Ok();
#else
  return FailedPrecondition("this trainer was built without CUDA");
#endif
}

std::optional<int64_t> FreeMemoryOf(at::Device device) {
  if (const char* hook = std::getenv("QLORAD_TEST_FREE_MEMORY_BYTES"); hook != nullptr) {
    return std::strtoll(hook, nullptr, 10);
  }
  if (!device.is_cuda()) return std::nullopt;
  return static_cast<int64_t>(at::accelerator::getMemoryInfo(device.index()).first);
}

}  // namespace qlorad::trainer
