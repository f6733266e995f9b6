// Fused SwiGLU on the GPU, forward and backward (formulas and layout: swiglu_params.h): one kernel
// each instead of silu, mul and, in backward, two muls and silu_backward as separate kernels with
// their intermediates in memory. Memory-bound: forward reads gate and up once and writes h once;
// backward reads dh, gate and up once and writes dgate and dup once, in 16-byte packs where the
// layout allows. Torch-free: kernels in swiglu_kernels.cuh, launchers in swiglu.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "common/status.h"
#include "kernels/swiglu_params.h"

namespace qlorad::kernels {

// Enqueue the kernel on `stream`; never synchronize and allocate nothing (CUDA-graph
// capturable). Fail on bad sizes, a missing pointer or a failed launch.
Status LaunchSwigluForward(const SwigluParams& p, cudaStream_t stream);
Status LaunchSwigluBackward(const SwigluParams& p, cudaStream_t stream);

}  // namespace qlorad::kernels
