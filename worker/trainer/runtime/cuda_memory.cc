#include "worker/trainer/runtime/cuda_memory.h"

#include <c10/cuda/CUDACachingAllocator.h>

namespace qlorad::trainer {

void SetCudaMemoryFraction(double fraction, int index) {
  c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction,
                                                     static_cast<c10::DeviceIndex>(index));
}

}  // namespace qlorad::trainer
