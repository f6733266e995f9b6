// Host memory that feeds the device without making the host wait. A copy from ordinary (pageable)
// host memory to a GPU returns only once the copy is done, and the copy runs after everything
// already queued on the stream: inside a training step the host would wait for the step so far.
// From page-locked memory a non_blocking copy is only queued.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace qlorad::trainer {

// A CPU buffer of `numel` elements to fill and copy to `device`: page-locked when `device` is a
// GPU, ordinary memory otherwise (the CPU needs no staging).
at::Tensor StagingBuffer(int64_t numel, at::ScalarType dtype, at::Device device);

// `host` (a CPU tensor) on `device`, the copy queued on the current stream without waiting for it;
// `host` itself when `device` is the CPU. The page-locked copy it stages through goes back to
// torch's caching host allocator, which reuses it only after the copy has completed (copy_
// records an event for it), so the caller may change `host` at once. For small tensors (a few
// numbers per step): larger ones belong in a reused StagingBuffer.
at::Tensor CopyToDeviceAsync(const at::Tensor& host, at::Device device);

}  // namespace qlorad::trainer
