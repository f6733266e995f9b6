// Device code of the online linear + cross-entropy (launchers: ce_online.cu; the algorithm and the
// row state: ce_online.h).
//
// One block per row in both kernels. The tile kernel makes two sweeps over its row of the tile
// (max and sums, then P written in place; between them each thread keeps its first packs in
// registers, and rereads the rest from L1/L2) and, when the row's reference max moves, one pass
// over the row of acc.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "kernels/ce_loss_kernels.cuh"
#include "kernels/ce_online.h"

namespace qlorad::kernels::cuda {

inline constexpr int kOnlineThreads = 256;
inline constexpr int kOnlineWarps = kOnlineThreads / 32;

// Block-wide sum; every thread gets the result. `scratch` holds kOnlineWarps floats.
__device__ __forceinline__ float dOnlineBlockSum(float v, float* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[0];
  for (int w = 1; w < kOnlineWarps; ++w) v += scratch[w];
  return v;
}

// Block-wide (max, sum) of every thread's pair in one round of barriers; every thread gets both.
__device__ __forceinline__ void dOnlineBlockMaxSum(float& mx, float& sum, float2* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, offset));
    sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = make_float2(mx, sum);
  __syncthreads();
  mx = scratch[0].x;
  sum = scratch[0].y;
  for (int w = 1; w < kOnlineWarps; ++w) {
    mx = fmaxf(mx, scratch[w].x);
    sum += scratch[w].y;
  }
  __syncthreads();
}

// A thread keeps its first kOnlineCachedPacks packs of the row in registers between the two sweeps
// (all of a bf16 row of up to 8192 columns), so the second sweep rereads only what did not fit.
inline constexpr int kOnlineCachedPacks = 4;

__device__ __forceinline__ float dWeight(float x, float m) {
  // A -inf logit weighs 0, also while m is still -inf (where exp(-inf - -inf) would be NaN).
  return x == -INFINITY ? 0.0f : expf(x - m);
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kOnlineThreads) kOnlineCeTile(OnlineCeTileParams p) {
  using P = Pack<T, kVec>;
  __shared__ float2 scratch[kOnlineWarps];
  __shared__ float scratch_sum[kOnlineWarps];
  const int64_t row = blockIdx.x;
  T* x = static_cast<T*>(p.logits) + row * p.cols;
  P* packs = reinterpret_cast<P*>(x);
  const int64_t n_packs = p.cols / kVec;
  float* state = p.state + row * kOnlineCeStateWidth;
  const int64_t local_label = p.labels[row] - p.vocab_offset;
  // Read before the reductions' barriers: after them the second sweep overwrites the row.
  const float target = (threadIdx.x == 0 && local_label >= 0 && local_label < p.cols)
                           ? dToFloat(x[local_label])
                           : NAN;

  P cached[kOnlineCachedPacks];
  float tile_max = -INFINITY, tile_sum_x = 0.0f;
  const auto fold = [&](const P& v) {
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float f = dToFloat(v.v[k]);
      tile_max = fmaxf(tile_max, f);
      tile_sum_x += f;
    }
  };
#pragma unroll
  for (int c = 0; c < kOnlineCachedPacks; ++c) {
    const int64_t i = threadIdx.x + int64_t{c} * kOnlineThreads;
    if (i < n_packs) {
      cached[c] = packs[i];
      fold(cached[c]);
    }
  }
  for (int64_t i = threadIdx.x + int64_t{kOnlineCachedPacks} * kOnlineThreads; i < n_packs;
       i += kOnlineThreads) {
    fold(packs[i]);
  }
  dOnlineBlockMaxSum(tile_max, tile_sum_x, scratch);

  const float m_old = p.first_tile ? -INFINITY : state[0];
  float m = m_old, alpha = 1.0f;
  if (p.first_tile) {
    m = tile_max;
  } else if (tile_max > m_old + kOnlineCeMaxLag) {  // false while both are -inf
    m = tile_max;
    alpha = expf(m_old - tile_max);  // 0 when m_old is -inf: what was summed so far is all 0
  }

  // l sums P before it is rounded to T: the loss keeps fp32 math (summing the rounded values would
  // put T's rounding, ~1e-3 for bf16, into every loss); the gradient's weights then sum to 1 only
  // within that rounding, as the logits' own gradient does on the chunked path.
  float l_tile = 0.0f;
  const auto weigh = [&](P v) {
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float e = dWeight(dToFloat(v.v[k]), m);
      v.v[k] = dFromFloat<T>(e);
      l_tile += e;
    }
    return v;
  };
#pragma unroll
  for (int c = 0; c < kOnlineCachedPacks; ++c) {
    const int64_t i = threadIdx.x + int64_t{c} * kOnlineThreads;
    if (i < n_packs) packs[i] = weigh(cached[c]);
  }
  for (int64_t i = threadIdx.x + int64_t{kOnlineCachedPacks} * kOnlineThreads; i < n_packs;
       i += kOnlineThreads) {
    packs[i] = weigh(packs[i]);
  }
  l_tile = dOnlineBlockSum(l_tile, scratch_sum);

  if (alpha != 1.0f && p.acc != nullptr && !p.first_tile) {
    float* acc = p.acc + row * p.dim;
    for (int64_t j = threadIdx.x; j < p.dim; j += kOnlineThreads) acc[j] *= alpha;
  }
  if (threadIdx.x == 0) {
    state[0] = m;
    state[1] = (p.first_tile ? 0.0f : state[1] * alpha) + l_tile;
    if (p.first_tile || (local_label >= 0 && local_label < p.cols)) state[2] = target;
    state[3] = (p.first_tile ? 0.0f : state[3]) + tile_sum_x;
  }
}

template <typename T>
__global__ void __launch_bounds__(kOnlineThreads) kOnlineCeFinish(OnlineCeFinishParams p) {
  const int64_t row = blockIdx.x;
  const float* state = p.state + row * kOnlineCeStateWidth;
  const int64_t label = p.labels[row];
  T* grad = p.acc != nullptr ? static_cast<T*>(p.grad) + row * p.dim : nullptr;
  if (label == p.ignore_index) {
    if (grad != nullptr) {
      for (int64_t j = threadIdx.x; j < p.dim; j += kOnlineThreads) grad[j] = dFromFloat<T>(0.0f);
    }
    if (threadIdx.x == 0) p.loss[row] = 0.0f;
    return;
  }
  const float m = state[0], l = state[1], target = state[2], sum_x = state[3];
  const float lse = m + logf(l);
  const float eps = p.label_smoothing;
  const bool label_ok = label >= 0 && label < p.vocab;
  if (threadIdx.x == 0) {
    float loss = (1.0f - eps) * (lse - target) + p.z_loss * lse * lse;
    if (eps != 0.0f) loss += eps * (lse - sum_x / static_cast<float>(p.vocab));
    p.loss[row] = label_ok ? loss : NAN;
  }
  if (grad == nullptr) return;
  const float* acc = p.acc + row * p.dim;
  const float coef = (1.0f + 2.0f * p.z_loss * lse) / l;
  const float hit = 1.0f - eps;
  const float uniform = eps / static_cast<float>(p.vocab);
  const T* w_label = label_ok ? static_cast<const T*>(p.weight) + label * p.dim : nullptr;
  for (int64_t j = threadIdx.x; j < p.dim; j += kOnlineThreads) {
    float g = coef * acc[j];
    if (w_label != nullptr) g -= hit * dToFloat(w_label[j]);
    if (eps != 0.0f) g -= uniform * p.weight_colsum[j];
    grad[j] = dFromFloat<T>(g);
  }
}

}  // namespace qlorad::kernels::cuda
