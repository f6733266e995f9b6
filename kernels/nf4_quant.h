// NF4 quantization on the GPU, bit-equal to bitsandbytes' quantize_4bit and to the CPU reference
// (nf4_ref.h), in two launches: the NF4 codes with an fp32 absmax per block, then (for double
// quantization) the 8-bit codes of (absmax - *offset) with the signed dynamic map in blocks of 256.
// The caller computes *offset = mean(absmax) on the device between the two, as bitsandbytes does
// with torch. Not a hot path (weights are quantized once, at load), so the kernels are plain.
// Torch-free: kernels in nf4_quant_kernels.cuh, launchers in nf4_quant.cu.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/status.h"
#include "kernels/float_format.h"

namespace qlorad::kernels {

// NaN or Inf weights: the kernel lowers *first_non_finite (device memory, set to kNoNonFinite by
// the caller) to 2 * index + (1 if infinite, 0 if NaN) of the first such element; the caller reads
// it back and fails (a sync, acceptable for quantization).
inline constexpr unsigned long long kNoNonFinite = ~0ull;
Status LaunchNF4Quantize(const void* weight, FloatFormat format, int64_t numel, int64_t blocksize,
                         uint8_t* packed, float* absmax, unsigned long long* first_non_finite,
                         cudaStream_t stream);

Status LaunchDoubleQuantizeAbsmax(const float* absmax, int64_t n_blocks, const float* offset,
                                  const float* code, uint8_t* codes, float* nested_absmax,
                                  cudaStream_t stream);

}  // namespace qlorad::kernels
