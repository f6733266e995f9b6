// Device code of the fused cross-entropy (launcher: ce_loss.cu; API and formulas: ce_loss.h).
//
// One block per row. Each thread walks the row in 16-byte packs (4 fp32 or 8 fp16/bf16 values)
// when the row allows it, else one value at a time, keeping its own online log-sum-exp; the
// block then merges the (max, sum) pairs. The second sweep rereads the row (mostly from L2, the
// block having just read it) and overwrites it with the gradient.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "kernels/ce_loss.h"
#include "kernels/float_types.cuh"

namespace qlorad::kernels::cuda {

inline constexpr int kCeThreads = 512;
inline constexpr int kCeWarps = kCeThreads / 32;

// Adds one logit to a running (max, sum of exp(x - max)). A -inf logit (a masked token) adds
// nothing, also while the max is still -inf, where exp(-inf - -inf) would be NaN.
__device__ __forceinline__ void dAddLogit(float x, float& m, float& s) {
  if (x > m) {
    s = s * expf(m - x) + 1.0f;
    m = x;
  } else if (x != -INFINITY) {
    s += expf(x - m);
  }
}

// Merges another (max, sum) pair into (m, s).
__device__ __forceinline__ void dMergeLse(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2;
    s = s2;
    return;
  }
  const float mx = fmaxf(m, m2);
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

// Block-wide merge of every thread's (max, sum, sum of logits); all threads get the result.
__device__ __forceinline__ void dBlockReduce(float& m, float& s, float& sum_x) {
  __shared__ float shared_m[kCeWarps], shared_s[kCeWarps], shared_x[kCeWarps];
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
    dMergeLse(m, s, m2, s2);
    sum_x += __shfl_xor_sync(0xffffffffu, sum_x, offset);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    shared_m[warp] = m;
    shared_s[warp] = s;
    shared_x[warp] = sum_x;
  }
  __syncthreads();
  m = shared_m[0];
  s = shared_s[0];
  sum_x = shared_x[0];
  for (int w = 1; w < kCeWarps; ++w) {
    dMergeLse(m, s, shared_m[w], shared_s[w]);
    sum_x += shared_x[w];
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kCeThreads) kCrossEntropyLossGrad(CrossEntropyParams p) {
  using P = Pack<T, kVec>;
  const int64_t row = blockIdx.x;
  T* x = static_cast<T*>(p.logits) + row * p.row_stride;
  P* packs = reinterpret_cast<P*>(x);
  const int64_t n_packs = p.vocab / kVec;
  const int64_t label = p.labels[row];
  if (label == p.ignore_index) {
    P zero;
#pragma unroll
    for (int k = 0; k < kVec; ++k) zero.v[k] = dFromFloat<T>(0.0f);
    for (int64_t i = threadIdx.x; i < n_packs; i += kCeThreads) packs[i] = zero;
    if (threadIdx.x == 0) p.loss[row] = 0.0f;
    return;
  }
  float m = -INFINITY, s = 0.0f, sum_x = 0.0f;
  for (int64_t i = threadIdx.x; i < n_packs; i += kCeThreads) {
    const P v = packs[i];
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float f = dToFloat(v.v[k]);
      sum_x += f;
      dAddLogit(f, m, s);
    }
  }
  const bool label_ok = label >= 0 && label < p.vocab;
  // Read before the block reduction's barrier: after it, the second sweep overwrites the row.
  const float target = label_ok ? dToFloat(x[label]) : NAN;
  dBlockReduce(m, s, sum_x);
  const float lse = m + logf(s);
  if (threadIdx.x == 0) {
    const float eps = p.label_smoothing;
    float loss = (1.0f - eps) * (lse - target) + p.z_loss * lse * lse;
    if (eps != 0.0f) loss += eps * (lse - sum_x / static_cast<float>(p.vocab));
    p.loss[row] = loss;
  }
  const float coef = p.grad_scale * (1.0f + 2.0f * p.z_loss * lse);
  const float uniform = p.grad_scale * p.label_smoothing / static_cast<float>(p.vocab);
  const float hit = p.grad_scale * (1.0f - p.label_smoothing);
  for (int64_t i = threadIdx.x; i < n_packs; i += kCeThreads) {
    P v = packs[i];
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const int64_t j = i * kVec + k;
      float g = expf(dToFloat(v.v[k]) - lse) * coef - uniform;
      if (j == label) g -= hit;
      v.v[k] = dFromFloat<T>(g);
    }
    packs[i] = v;
  }
}

}  // namespace qlorad::kernels::cuda
