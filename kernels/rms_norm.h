// Fused RMSNorm on the GPU (Hugging Face's LlamaRMSNorm; formulas: rms_norm_params.h): forward with
// an optional residual add in front (h = x + residual, written once, then normalized), and
// backward with an optional residual-stream gradient added into dx. One thread block per row,
// 16-byte loads and stores, fp32 sums; a row of up to 8 packs a thread (bf16: 32768 values, fp32:
// 16384) stays in registers between the row's sum and its writes, so forward reads x (and the
// residual) once and writes y (and h) once, and backward reads dy, x (and dresidual) once and
// writes dx once. Longer rows are read twice, the second time mostly from L2.
// Torch-free: raw pointers and sizes; kernels in rms_norm_kernels.cuh, launchers in rms_norm.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "common/status.h"
#include "kernels/rms_norm_params.h"

namespace qlorad::kernels {

// Enqueue the kernel on `stream`; they never synchronize and allocate nothing (CUDA-graph
// capturable). Fail on bad sizes, missing pointers or a failed launch.
Status LaunchRmsNormForward(const RmsNormForwardParams& p, cudaStream_t stream);
Status LaunchRmsNormBackward(const RmsNormBackwardParams& p, cudaStream_t stream);

}  // namespace qlorad::kernels
