// Fused RoPE on the GPU: the queries and keys of attention rotated in place by one launch, forward
// or inverse (formulas and layout: rope_params.h), instead of the dozen fp32 casts, cats, narrows,
// products and sums of the unfused rotation, each of which reads and writes every element again.
// Memory-bound: each element of q and k is read once and written once, in 16-byte packs where the
// layout allows. Torch-free: kernels in rope_kernels.cuh, launcher in rope.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "common/status.h"
#include "kernels/rope_params.h"

namespace qlorad::kernels {

// Enqueues the rotation on `stream`; never synchronizes and allocates nothing, so it can be
// captured in a CUDA graph. The kernel cannot raise, so a position outside the table turns that
// token's q and k into NaN (the step then fails loudly) rather than reading past the table; the
// CPU op reports it by index. Fails on bad sizes, a missing pointer or a failed launch.
Status LaunchRope(const RopeParams& p, cudaStream_t stream);

}  // namespace qlorad::kernels
