// Rotary position embedding (Hugging Face's rotate_half convention), applied in place (or from a
// source, RopeHeads) to the queries and keys of attention: one call as the CPU reference
// (rope_ref.h) and the CUDA launcher (rope.h) both receive it, and the per-pair formula both
// evaluate. Torch-free and CUDA-free.
//
// q [batch, seq, q_heads, d] and k [batch, seq, kv_heads, d] are read straight from the projection
// GEMMs (before any transpose): any strides over batch and seq (e.g. column slices of one fused
// qkv output), heads and head_dim contiguous. Token (b, s) uses table row p = positions[b, s], or
// s without positions (packed documents restart at 0). For each pair i < d/2 of every head, with
// x1 = x[i], x2 = x[i + d/2]:
//   forward: y[i] = x1 cos[p, i] - x2 sin[p, i],    y[i + d/2] = x2 cos[p, i + d/2] + x1 sin[p, i +
//   d/2] inverse: y[i] = x1 cos[p, i] + x2 sin[p, i + d/2], y[i + d/2] = x2 cos[p, i + d/2] - x1
//   sin[p, i]
// The inverse is the transpose of the forward map, so it is the forward's backward for any table;
// for Hugging Face's tables (both halves equal, cos^2 + sin^2 = 1) it is the rotation by minus the
// angle, i.e. the forward with sin negated, which undoes the forward.
// Each product and the sum round to fp32 separately (no fused multiply-add: the reference builds
// with -ffp-contract=off, the kernels with --fmad=false), as the trainer's
// x * cos + rotate_half(x) * sin does in separate fp32 ops; the result rounds once to the format.
#pragma once

#include <cstdint>

#include "kernels/float_format.h"
#include "kernels/host_device.h"

namespace qlorad::kernels {

// q or k: element (b, s, h, i) sits at data + b * batch_stride + s * seq_stride + h * d + i.
// In place, the rotation reads and writes there. Out of place (source set), it reads element
// (b, s, h, i) at source + b * source_batch_stride + s * source_seq_stride + h * source_head_stride
// + i and writes `data`: backward rotates attention's gradients (laid out as the attention kernel
// left them) straight into their place in q|k|v's gradient, with no copy first.
struct RopeHeads {
  void* data = nullptr;
  int64_t heads = 0;
  int64_t batch_stride = 0;  // in elements
  int64_t seq_stride = 0;    // in elements
  const void* source = nullptr;
  int64_t source_batch_stride = 0;  // in elements, as the others
  int64_t source_seq_stride = 0;
  int64_t source_head_stride = 0;
};

struct RopeParams {
  RopeHeads q;
  RopeHeads k;
  int64_t batch = 0;
  int64_t seq = 0;
  int64_t head_dim = 0;                         // even
  FloatFormat format = FloatFormat::kBFloat16;  // of q and k
  const float* cos = nullptr;                   // fp32 [table_rows, head_dim], contiguous
  const float* sin = nullptr;                   // fp32 [table_rows, head_dim], contiguous
  int64_t table_rows = 0;
  const int64_t* positions = nullptr;  // [batch, seq] at the strides below; null: row s
  int64_t positions_batch_stride = 0;
  int64_t positions_seq_stride = 0;
  bool inverse = false;
};

// The table row of token (b, s); may lie outside the table when positions are wrong.
QLORAD_HOST_DEVICE inline int64_t RopeTableRow(const RopeParams& p, int64_t b, int64_t s) {
  if (p.positions == nullptr) return s;
  return p.positions[b * p.positions_batch_stride + s * p.positions_seq_stride];
}

// Rotates the pair (x1, x2) = (x[i], x[i + d/2]) in place; c_lo, c_hi, s_lo, s_hi are the table's
// values at columns i and i + d/2. The inverse swaps the sin halves and negates them; negation is
// exact, so x1 c - x2 (-s) rounds exactly as x1 c + x2 s.
QLORAD_HOST_DEVICE inline void RotatePair(float& x1, float& x2, float c_lo, float c_hi, float s_lo,
                                          float s_hi, bool inverse) {
  const float a = inverse ? -s_hi : s_lo;
  const float b = inverse ? -s_lo : s_hi;
  const float y1 = x1 * c_lo - x2 * a;
  const float y2 = x2 * c_hi + x1 * b;
  x1 = y1;
  x2 = y2;
}

}  // namespace qlorad::kernels
