// Parameters of the fused RMSNorm (Hugging Face's LlamaRMSNorm), shared by the CUDA launchers
// (rms_norm.h) and the CPU reference (rms_norm_ref.h), so both read one description of a call.
// CUDA-free and torch-free: the CPU-only build includes it.
//
// Per row r of length H (all arithmetic in fp32, `round` = rounding to the tensors' format, a
// no-op for fp32):
//   forward   h        = residual ? round(x + residual) : x       (torch's own add of two tensors)
//             inv_rms  = 1 / sqrt(sum_j h_j^2 / H + eps)
//             y_j      = round(w_j * round(h_j * inv_rms))       (HF: weight * (h *
//             rsqrt).to(dtype))
//   backward  n_j = h_j * inv_rms,  g_j = dy_j * w_j,  c = sum_j g_j n_j / H
//             dx_j     = round(inv_rms * (g_j - n_j * c) + dresidual_j)   (dresidual optional)
// The rounding of n in forward is the identity for autograd, so backward uses the unrounded n.
// inv_rms is the only saved state: backward reads the forward's input again (h for the fused form).
#pragma once

#include <cstdint>

#include "kernels/float_format.h"

namespace qlorad::kernels {

// Row-major [rows, hidden] tensors of `format` (fp32 inv_rms aside), rows back to back (but for
// forward's y and backward's dy, whose rows may be spaced wider).
struct RmsNormForwardParams {
  const void* x = nullptr;
  const void* residual = nullptr;  // optional: normalizes h = x + residual and writes h
  void* h = nullptr;               // written when residual is given, else unused
  const void* weight = nullptr;    // [hidden]
  void* y = nullptr;
  // Values from the start of one row of y to the next; 0: hidden. Wider rows leave columns after
  // each row for the consumer (a folded LoRA projection writes x A there: fused_projection.h).
  int64_t y_row_stride = 0;
  float* inv_rms = nullptr;  // [rows], fp32
  int64_t rows = 0;
  int64_t hidden = 0;
  float eps = 1e-6f;
  FloatFormat format = FloatFormat::kBFloat16;
};

struct RmsNormBackwardParams {
  const void* dy = nullptr;
  // Values from the start of one row of dy to the next; 0: hidden (back to back). A gradient that
  // is the first columns of a wider matrix (a folded LoRA projection's dX) is read in place.
  int64_t dy_row_stride = 0;
  const void* x = nullptr;  // the forward's normalized input (h for the fused residual form)
  const void* weight = nullptr;
  const float* inv_rms = nullptr;   // [rows], fp32, from the forward
  const void* dresidual = nullptr;  // optional: added into dx (the residual stream's gradient)
  void* dx = nullptr;               // may be dy or dresidual: each value is read before written
  int64_t rows = 0;
  int64_t hidden = 0;
  FloatFormat format = FloatFormat::kBFloat16;
};

}  // namespace qlorad::kernels
