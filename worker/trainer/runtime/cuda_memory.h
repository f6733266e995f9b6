// The one CUDA-only call of the runtime, kept out of device.cc so that file builds without the
// CUDA toolkit's headers (cuda_memory.cc is compiled only in a CUDA build).
#pragma once

namespace qlorad::trainer {

// c10::cuda::CUDACachingAllocator::setMemoryFraction for CUDA device `index`.
void SetCudaMemoryFraction(double fraction, int index);

}  // namespace qlorad::trainer
