#include "worker/trainer/runtime/cuda_memory.h"

#include <ATen/Context.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>

namespace qlorad::trainer {

void SetCudaMemoryFraction(double fraction, int index) {
  // The caching allocator is set up with CUDA, lazily: asked before the first CUDA tensor (the
  // trainer limits memory before it loads anything) it fails with "Allocator not initialized".
  at::globalContext().lazyInitDevice(c10::DeviceType::CUDA);
  // A device named "cuda" without an index means the current one.
  const c10::DeviceIndex device =
      index >= 0 ? static_cast<c10::DeviceIndex>(index) : c10::cuda::current_device();
  c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, device);
}

}  // namespace qlorad::trainer
