// Device code of the fused RoPE (launcher: rope.cu; formulas and layout: rope_params.h).
//
// One block per token (grid-stride over tokens): the token's table row is looked up once, and the
// block's threads share it from L1. A thread takes one unit: kVec pairs of one head of q or k, i.e.
// one pack from each half of the head (16 bytes each on the vector path), which it rotates in fp32
// and writes back in place (or, from a source, writes to q and k). q's heads come first, then
// k's, so one launch serves both.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/float_types.cuh"
#include "kernels/rope_params.h"

namespace qlorad::kernels::cuda {

inline constexpr int kRopeMaxThreads = 512;

template <typename T, int kVec>
__global__ void __launch_bounds__(kRopeMaxThreads) kRope(const RopeParams p) {
  using P = Pack<T, kVec>;
  using F = Pack<float, kVec>;
  const int half = static_cast<int>(p.head_dim / 2);
  const int chunks = half / kVec;  // units per head
  const int q_units = static_cast<int>(p.q.heads) * chunks;
  const int units = q_units + static_cast<int>(p.k.heads) * chunks;
  const int64_t tokens = p.batch * p.seq;
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const int64_t b = t / p.seq;
    const int64_t s = t - b * p.seq;
    const int64_t row = RopeTableRow(p, b, s);
    // The kernel cannot raise and must not sync: a position outside the table makes the token NaN.
    const bool in_table = row >= 0 && row < p.table_rows;
    const float* cos = p.cos + (in_table ? row : 0) * p.head_dim;
    const float* sin = p.sin + (in_table ? row : 0) * p.head_dim;
    for (int u = threadIdx.x; u < units; u += blockDim.x) {
      // Field by field rather than a reference to p.q or p.k: a dynamically chosen reference into
      // the parameter block would copy it to local memory.
      const bool is_q = u < q_units;
      const int v = is_q ? u : u - q_units;
      const int h = v / chunks;
      const int i = (v - h * chunks) * kVec;
      T* lo_ptr = static_cast<T*>(is_q ? p.q.data : p.k.data) +
                  b * (is_q ? p.q.batch_stride : p.k.batch_stride) +
                  s * (is_q ? p.q.seq_stride : p.k.seq_stride) + int64_t{h} * p.head_dim + i;
      const void* source = is_q ? p.q.source : p.k.source;
      const T* from =
          source == nullptr
              ? lo_ptr
              : static_cast<const T*>(source) +
                    b * (is_q ? p.q.source_batch_stride : p.k.source_batch_stride) +
                    s * (is_q ? p.q.source_seq_stride : p.k.source_seq_stride) +
                    h * (is_q ? p.q.source_head_stride : p.k.source_head_stride) + i;
      P lo = *reinterpret_cast<const P*>(from);
      P hi = *reinterpret_cast<const P*>(from + half);
      const F c_lo = *reinterpret_cast<const F*>(cos + i);
      const F c_hi = *reinterpret_cast<const F*>(cos + i + half);
      const F s_lo = *reinterpret_cast<const F*>(sin + i);
      const F s_hi = *reinterpret_cast<const F*>(sin + i + half);
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        float x1 = dToFloat(lo.v[e]);
        float x2 = dToFloat(hi.v[e]);
        RotatePair(x1, x2, c_lo.v[e], c_hi.v[e], s_lo.v[e], s_hi.v[e], p.inverse);
        lo.v[e] = dFromFloat<T>(in_table ? x1 : NAN);
        hi.v[e] = dFromFloat<T>(in_table ? x2 : NAN);
      }
      *reinterpret_cast<P*>(lo_ptr) = lo;
      *reinterpret_cast<P*>(lo_ptr + half) = hi;
    }
  }
}

}  // namespace qlorad::kernels::cuda
