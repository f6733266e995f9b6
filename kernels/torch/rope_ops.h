// C++ entry point of the fused RoPE operator (schema in rope_ops.cc). Goes through the dispatcher:
// the CUDA kernel (kernels/rope.h) for CUDA tensors, the CPU reference (kernels/rope_ref.h) for CPU
// ones. Formulas and layout: kernels/rope_params.h.
#pragma once

#include <ATen/ATen.h>

namespace qlorad::ops {

// Rotates q [batch, seq, q_heads, d] and k [batch, seq, kv_heads, d] in place (fp32, fp16 or
// bf16, one dtype; any strides over batch and seq, heads and head_dim contiguous, e.g. column
// slices of one fused qkv output) by the fp32 tables cos, sin [table_rows, d] (Hugging Face's
// layout: the half-size frequency table repeated twice). Token (b, s) uses table row
// positions[b, s] (int64 [batch, seq]), or row s when positions is undefined. inverse=true applies
// the transpose of the rotation (the rotation with sin negated for HF tables): its backward, run
// in place on the gradients of q and k. Never synchronizes on CUDA; on CPU a position outside the
// table is an error naming the token.
void RopeInPlace(at::Tensor& q, at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin,
                 const at::Tensor& positions /*undefined = row s*/, bool inverse);

// RopeInPlace's rotation of q and k (any strides over batch, seq and heads; head_dim contiguous)
// written into q_out and k_out (laid out as RopeInPlace's q and k, in memory apart from q and k):
// the trainer's attention backward rotates the attention kernel's gradients straight into their
// heads of q|k|v's gradient, without copying them there first.
void RopeInto(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
              const at::Tensor& sin, const at::Tensor& positions /*undefined = row s*/,
              bool inverse, at::Tensor& q_out, at::Tensor& k_out);

}  // namespace qlorad::ops
