// SwiGLU, the activation of Llama's MLP (Hugging Face's LlamaMLP: silu(gate) * up), forward and
// backward: one call as the CPU reference (swiglu_ref.h) and the CUDA launchers (swiglu.h) both
// receive it, and the per-element formulas both evaluate. Torch-free and CUDA-free.
//
// gate, up [rows, cols] (and dh for backward) may be column slices of one [rows, 2 cols] GEMM
// output: unit stride along cols, any row stride. With round() the rounding to the tensors' format:
//   forward:  h = round(round(silu(g)) * u), silu(g) = g / (1 + exp(-g))
//   backward: dup   = round(dh * round(silu(g)))
//             dgate = round(round(dh * u) * s * (1 + g * (1 - s))), s = 1 / (1 + exp(-g))
// which is torch's at::silu(g) * u and its autograd step by step (silu and the products of mul and
// its backward round to the format, silu_backward computes in fp32): bit-equal up to exp's last
// fp32 bit, so within one ulp of the format. Backward writes one contiguous dgu [rows, 2 cols],
// dgate in [:, :cols] and dup in [:, cols:], so dX is one GEMM over the concatenated gate|up
// weights, and, when asked (h_out), h exactly as forward computes it.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/float_format.h"
#include "kernels/host_device.h"

namespace qlorad::kernels {

struct SwigluParams {
  const void* gate = nullptr;  // [rows, cols] at row stride gate_stride (elements)
  int64_t gate_stride = 0;
  const void* up = nullptr;  // [rows, cols] at row stride up_stride
  int64_t up_stride = 0;
  const void* dh = nullptr;  // backward only: [rows, cols] at row stride dh_stride
  int64_t dh_stride = 0;
  // Forward: h [rows, cols] at row stride out_stride (0: cols; more leaves spare columns after
  // each row, which the down projection fills with h A^T); backward: dgu [rows, 2 cols],
  // contiguous.
  void* out = nullptr;
  int64_t out_stride = 0;
  // Backward only, optional: h [rows, cols] as forward writes it, from the gate and up values the
  // backward reads anyway. The MLP's backward needs h for down's adapter gradient; writing it here
  // costs one store instead of a forward pass that reads gate and up again.
  void* h_out = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  FloatFormat format = FloatFormat::kBFloat16;  // of every tensor above
};

// torch's silu: g / (1 + exp(-g)) in fp32 (a division, not g * sigmoid(g), which rounds otherwise).
QLORAD_HOST_DEVICE inline float SiluOf(float g) {
  return g / (1.0f + expf(-g));
}

// h for one element; round(x) rounds x to the tensors' format and widens it back to fp32.
template <typename Round>
QLORAD_HOST_DEVICE inline float SwigluOf(float g, float u, Round round) {
  return round(round(SiluOf(g)) * u);
}

// dgate and dup for one element, before their final rounding to the format (the store does it).
template <typename Round>
QLORAD_HOST_DEVICE inline void SwigluGradOf(float dh, float g, float u, Round round, float& dgate,
                                            float& dup) {
  dup = dh * round(SiluOf(g));
  const float s = 1.0f / (1.0f + expf(-g));
  dgate = round(dh * u) * s * (1.0f + g * (1.0f - s));
}

}  // namespace qlorad::kernels
