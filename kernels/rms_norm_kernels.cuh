// Device code of the fused RMSNorm (launchers: rms_norm.cu; formulas: rms_norm_params.h).
//
// One block per row. Thread t handles the packs t, t + blockDim.x, ... of its row: 16 bytes each
// (kVec values), or single values (kVec = 1) when the row's pointers or length do not allow packs.
// kCached > 0: the row fits in kCached packs a thread, kept in registers from the read to the
// write, so every input is read from memory once. kCached == 0: any length; the second sweep reads
// the row again, each thread the very addresses it read (or wrote, h) in the first.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/float_types.cuh"
#include "kernels/rms_norm_params.h"

namespace qlorad::kernels::cuda {

// 512 threads leave 128 registers a thread, room for 8 cached packs of dy and x in backward.
inline constexpr int kRmsMaxThreads = 512;
inline constexpr int kRmsMaxCachedPacks = 8;

// Sum over the block, the same value on every thread; blockDim.x is a multiple of 32. The order is
// fixed, so results are bitwise the same on every run. Its shared memory is used once per kernel.
__device__ __forceinline__ float dBlockSum(float v) {
  __shared__ float warp_sums[kRmsMaxThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / 32) ? warp_sums[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T, int kVec>
__device__ __forceinline__ Pack<T, kVec> dLoad(const void* base, int64_t element) {
  return *reinterpret_cast<const Pack<T, kVec>*>(static_cast<const T*>(base) + element);
}

template <typename T, int kVec>
__device__ __forceinline__ void dStore(void* base, int64_t element, const Pack<T, kVec>& v) {
  *reinterpret_cast<Pack<T, kVec>*>(static_cast<T*>(base) + element) = v;
}

// The pack of the row's input at `element`: x, or h = x + residual rounded as torch's add rounds
// (then stored: h is the next residual stream). Adds the squares of its values.
template <typename T, int kVec>
__device__ __forceinline__ Pack<T, kVec> dForwardLoad(const RmsNormForwardParams& p,
                                                      int64_t element, float& sum_squares) {
  Pack<T, kVec> h = dLoad<T, kVec>(p.x, element);
  if (p.residual != nullptr) {
    const Pack<T, kVec> r = dLoad<T, kVec>(p.residual, element);
#pragma unroll
    for (int k = 0; k < kVec; ++k) h.v[k] = dFromFloat<T>(dToFloat(h.v[k]) + dToFloat(r.v[k]));
    dStore<T, kVec>(p.h, element, h);
  }
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    const float f = dToFloat(h.v[k]);
    sum_squares += f * f;
  }
  return h;
}

// The row's inv_rms from every thread's share of the sum of squares; thread 0 stores it.
__device__ __forceinline__ float dInvRms(const RmsNormForwardParams& p, float sum_squares) {
  const float total = dBlockSum(sum_squares);
  // 1 / sqrtf, both correctly rounded (no fast math), as the CPU reference computes it. HF's
  // torch.rsqrt is rsqrtf on CUDA (within 2 ulp) and 1 / sqrt on the CPU, so inv_rms may differ
  // from HF's by 1-2 fp32 ulp (as it may through the sum's order), which moves a bf16 output by
  // one bf16 ulp where h * inv_rms lies that close to a rounding boundary (about 1e-5 of values).
  const float inv = 1.0f / sqrtf(total / static_cast<float>(p.hidden) + p.eps);
  if (threadIdx.x == 0) p.inv_rms[blockIdx.x] = inv;
  return inv;
}

// y = round(w * round(h * inv_rms)) for the pack at column `col` of y's row starting at `row`.
template <typename T, int kVec>
__device__ __forceinline__ void dForwardStore(const RmsNormForwardParams& p, int64_t row,
                                              int64_t col, const Pack<T, kVec>& h, float inv) {
  const Pack<T, kVec> w = dLoad<T, kVec>(p.weight, col);
  Pack<T, kVec> y;
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    const float normed = dToFloat(dFromFloat<T>(dToFloat(h.v[k]) * inv));
    y.v[k] = dFromFloat<T>(dToFloat(w.v[k]) * normed);
  }
  dStore<T, kVec>(p.y, row + col, y);
}

template <typename T, int kVec, int kCached>
__global__ void __launch_bounds__(kRmsMaxThreads) kRmsNormForward(RmsNormForwardParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * p.hidden;
  const int64_t y_row =
      static_cast<int64_t>(blockIdx.x) * (p.y_row_stride > 0 ? p.y_row_stride : p.hidden);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * kVec;
  float sum_squares = 0.0f;
  if constexpr (kCached > 0) {
    Pack<T, kVec> h[kCached];
#pragma unroll
    for (int k = 0; k < kCached; ++k) {
      const int64_t col = threadIdx.x * kVec + k * stride;
      if (col < p.hidden) h[k] = dForwardLoad<T, kVec>(p, row + col, sum_squares);
    }
    const float inv = dInvRms(p, sum_squares);
#pragma unroll
    for (int k = 0; k < kCached; ++k) {
      const int64_t col = threadIdx.x * kVec + k * stride;
      if (col < p.hidden) dForwardStore<T, kVec>(p, y_row, col, h[k], inv);
    }
  } else {
    for (int64_t col = threadIdx.x * kVec; col < p.hidden; col += stride) {
      dForwardLoad<T, kVec>(p, row + col, sum_squares);
    }
    const float inv = dInvRms(p, sum_squares);
    const void* h = p.residual != nullptr ? p.h : p.x;
    for (int64_t col = threadIdx.x * kVec; col < p.hidden; col += stride) {
      dForwardStore<T, kVec>(p, y_row, col, dLoad<T, kVec>(h, row + col), inv);
    }
  }
}

// sum_k g_k * n_k of one pack, with g = dy * w and n = x * inv_rms in fp32.
template <typename T, int kVec>
__device__ __forceinline__ float dGradDot(const RmsNormBackwardParams& p, int64_t col,
                                          const Pack<T, kVec>& dy, const Pack<T, kVec>& x,
                                          float inv) {
  const Pack<T, kVec> w = dLoad<T, kVec>(p.weight, col);
  float dot = 0.0f;
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    dot += dToFloat(dy.v[k]) * dToFloat(w.v[k]) * (dToFloat(x.v[k]) * inv);
  }
  return dot;
}

// dx = round(inv * (g - n * c) + dresidual) for one pack, c = mean_j(g_j * n_j) of the row.
template <typename T, int kVec>
__device__ __forceinline__ void dBackwardStore(const RmsNormBackwardParams& p, int64_t row,
                                               int64_t col, const Pack<T, kVec>& dy,
                                               const Pack<T, kVec>& x, float inv, float c) {
  const Pack<T, kVec> w = dLoad<T, kVec>(p.weight, col);
  Pack<T, kVec> dx;
  if (p.dresidual != nullptr) dx = dLoad<T, kVec>(p.dresidual, row + col);
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    const float g = dToFloat(dy.v[k]) * dToFloat(w.v[k]);
    float d = inv * (g - (dToFloat(x.v[k]) * inv) * c);
    if (p.dresidual != nullptr) d += dToFloat(dx.v[k]);
    dx.v[k] = dFromFloat<T>(d);
  }
  dStore<T, kVec>(p.dx, row + col, dx);
}

template <typename T, int kVec, int kCached>
__global__ void __launch_bounds__(kRmsMaxThreads) kRmsNormBackward(RmsNormBackwardParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * p.hidden;
  const int64_t dy_row =
      static_cast<int64_t>(blockIdx.x) * (p.dy_row_stride > 0 ? p.dy_row_stride : p.hidden);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * kVec;
  const float inv = p.inv_rms[blockIdx.x];
  float dot = 0.0f;
  if constexpr (kCached > 0) {
    Pack<T, kVec> dy[kCached], x[kCached];
#pragma unroll
    for (int k = 0; k < kCached; ++k) {
      const int64_t col = threadIdx.x * kVec + k * stride;
      if (col < p.hidden) {
        dy[k] = dLoad<T, kVec>(p.dy, dy_row + col);
        x[k] = dLoad<T, kVec>(p.x, row + col);
        dot += dGradDot<T, kVec>(p, col, dy[k], x[k], inv);
      }
    }
    const float c = dBlockSum(dot) / static_cast<float>(p.hidden);
#pragma unroll
    for (int k = 0; k < kCached; ++k) {
      const int64_t col = threadIdx.x * kVec + k * stride;
      if (col < p.hidden) dBackwardStore<T, kVec>(p, row, col, dy[k], x[k], inv, c);
    }
  } else {
    for (int64_t col = threadIdx.x * kVec; col < p.hidden; col += stride) {
      dot += dGradDot<T, kVec>(p, col, dLoad<T, kVec>(p.dy, dy_row + col),
                               dLoad<T, kVec>(p.x, row + col), inv);
    }
    const float c = dBlockSum(dot) / static_cast<float>(p.hidden);
    for (int64_t col = threadIdx.x * kVec; col < p.hidden; col += stride) {
      dBackwardStore<T, kVec>(p, row, col, dLoad<T, kVec>(p.dy, dy_row + col),
                              dLoad<T, kVec>(p.x, row + col), inv, c);
    }
  }
}

}  // namespace qlorad::kernels::cuda
