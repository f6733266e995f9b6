// Which device a rank runs on, and what it reports of its memory.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/events.h"
#include "common/spec_choices.h"
#include "common/status.h"

namespace qlorad::trainer {

// resources.device (or --device) -> the device. Local ranks started by `qlorad-train launch`
// share a host: rank r takes GPU r (mod count); a rank started by a worker sees only its own GPU.
// `field` names where the choice came from, for the error when cuda is asked of a host without.
StatusOr<at::Device> ResolveDevice(DeviceChoice requested, const std::string& field);

// The caching allocator's current, reserved and peak bytes into `metrics`; the CPU has no such
// allocator to report, so a CPU run leaves them 0.
void FillVram(at::Device device, events::Metrics* metrics);

// What tensors hold on `device` now and the device's total memory, in bytes; nullopt on the CPU,
// which has no caching allocator to ask.
struct DeviceMemory {
  int64_t allocated = 0;
  int64_t total = 0;
};
std::optional<DeviceMemory> MemoryOf(at::Device device);

// Hands the caching allocator's unused blocks on `device` back to the driver, so that a retry
// after running out of memory starts from what live tensors hold; nothing on the CPU.
void ReleaseCachedMemory(at::Device device);

// Caps what the caching allocator may hold on `device` at `fraction` of its memory (torch's
// set_per_process_memory_fraction): allocations beyond it fail as if the device were that small.
// For tests of running out of memory (QLORAD_CUDA_MEMORY_FRACTION); only CUDA devices have it.
Status LimitMemoryFraction(at::Device device, double fraction);

// Bytes free on `device` now (the CUDA driver's count, which already leaves out this process's
// context); nullopt on the CPU. Test hook: QLORAD_TEST_FREE_MEMORY_BYTES=N makes any device, the
// CPU included, report N, so the memory check (train/memory_check.h) can be tested without a GPU.
std::optional<int64_t> FreeMemoryOf(at::Device device);

}  // namespace qlorad::trainer
