// Device code of NF4 quantization (launchers: nf4_quant.cu; API: nf4_quant.h). One warp per
// quantization block: the lanes stride over the block, reduce |x| to absmax with shuffles (max is
// exact in any order, so the result equals bitsandbytes' block reduction), then code pairs of
// elements into bytes. Decisions are bitsandbytes' (nf4_decisions.h, shared with the CPU
// reference): multiply by the IEEE reciprocal of absmax, count the thresholds below; 8-bit codes by
// its binary search + midpoint.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/nf4_decisions.h"

namespace qlorad::kernels::cuda {

inline constexpr int kQuantThreads = 256;
inline constexpr int kWarpsPerQuantBlock = kQuantThreads / 32;

struct NF4Thresholds {
  float value[15];
};

__device__ __forceinline__ float dToFloat(float x) {
  return x;
}
__device__ __forceinline__ float dToFloat(__half x) {
  return __half2float(x);
}
__device__ __forceinline__ float dToFloat(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

__device__ __forceinline__ float dWarpMax(float m) {
#pragma unroll
  for (int delta = 16; delta > 0; delta >>= 1) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, delta));
  return m;
}

__device__ __forceinline__ uint32_t dNF4Code(float normalized, const NF4Thresholds& t) {
  return CountThresholdsBelow(t.value, normalized);
}

template <typename InT>
__global__ void __launch_bounds__(kQuantThreads)
    kQuantizeNF4(const InT* weight, int64_t numel, int64_t blocksize, uint8_t* packed,
                 float* absmax, unsigned long long* first_non_finite, NF4Thresholds thresholds) {
  const int lane = threadIdx.x % 32;
  const int64_t n_blocks = (numel + blocksize - 1) / blocksize;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * kWarpsPerQuantBlock;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * kWarpsPerQuantBlock + threadIdx.x / 32;
       b < n_blocks; b += warp_stride) {
    const int64_t begin = b * blocksize;
    const int64_t end = min(numel, begin + blocksize);
    float m = 0.0f;
    for (int64_t i = begin + lane; i < end; i += 32) {
      const float x = FlushSubnormal(dToFloat(weight[i]));
      if (!isfinite(x))
        atomicMin(first_non_finite, 2ull * static_cast<unsigned long long>(i) + (isinf(x) ? 1 : 0));
      m = fmaxf(m, fabsf(x));
    }
    m = dWarpMax(m);
    if (lane == 0) absmax[b] = m;
    // An all-zero block gives inf here and NaN codes below, which become code 0 as in bitsandbytes.
    const float inverse = __fdiv_rn(1.0f, m);
    for (int64_t i = begin + 2 * lane; i < end; i += 64) {
      const float first = FlushSubnormal(dToFloat(weight[i]));
      const float second = i + 1 < end ? FlushSubnormal(dToFloat(weight[i + 1]))
                                       : 0.0f;  // bitsandbytes' zero padding
      packed[i / 2] = static_cast<uint8_t>((dNF4Code(__fmul_rn(first, inverse), thresholds) << 4) |
                                           dNF4Code(__fmul_rn(second, inverse), thresholds));
    }
  }
}

// One warp per 256 absmax values: 8 per lane.
__global__ void __launch_bounds__(kQuantThreads)
    kDoubleQuantizeAbsmax(const float* absmax, int64_t n_blocks, const float* offset_ptr,
                          const float* code, uint8_t* codes, float* nested_absmax) {
  __shared__ float s_code[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = code[i];
  __syncthreads();
  const float offset = *offset_ptr;
  const int lane = threadIdx.x % 32;
  const int64_t n_nested = (n_blocks + 255) / 256;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * kWarpsPerQuantBlock;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * kWarpsPerQuantBlock + threadIdx.x / 32;
       b < n_nested; b += warp_stride) {
    float centered[8];
    float m = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int64_t i = b * 256 + k * 32 + lane;
      centered[k] = i < n_blocks ? __fsub_rn(absmax[i], offset) : 0.0f;
      m = fmaxf(m, fabsf(centered[k]));
    }
    m = dWarpMax(m);
    if (lane == 0) nested_absmax[b] = m;
    const float inverse = __fdiv_rn(1.0f, m);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int64_t i = b * 256 + k * 32 + lane;
      if (i < n_blocks)
        codes[i] = static_cast<uint8_t>(SearchDynamicCode(s_code, __fmul_rn(centered[k], inverse)));
    }
  }
}

}  // namespace qlorad::kernels::cuda
