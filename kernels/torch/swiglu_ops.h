// C++ entry points of the fused SwiGLU operators (schemas in swiglu_ops.cc). They go through the
// dispatcher: the CUDA kernels (kernels/swiglu.h) for CUDA tensors, the CPU reference
// (kernels/swiglu_ref.h) for CPU ones. Formulas and layout: kernels/swiglu_params.h.
#pragma once

#include <ATen/ATen.h>

#include <utility>

namespace qlorad::ops {

// h = silu(gate) * up as torch computes it in the tensors' dtype (fp32, fp16 or bf16; silu
// rounded to the dtype, then the product). gate and up [..., I] share shape and dtype; unit stride
// along I and one stride between rows (e.g. column slices of one [..., 2I] buffer). Returns a new
// h [..., I]: contiguous, or with spare_columns > 0 the first I columns of rows I + spare_columns
// apart (room the caller fills, as the RMSNorms leave it: kernels/torch/rms_norm_ops.h).
at::Tensor SwigluForward(const at::Tensor& gate, const at::Tensor& up, int64_t spare_columns = 0);

// Backward of SwigluForward for the gradient dh [..., I] (same rules as gate and up): returns one
// contiguous dgu [..., 2I], d(gate) in [..., :I] and d(up) in [..., I:], so dX is one GEMM over
// the concatenated gate|up weights. Within one ulp of torch's autograd of silu(gate) * up.
at::Tensor SwigluBackward(const at::Tensor& dh, const at::Tensor& gate, const at::Tensor& up);

// SwigluBackward's dgu and, from the same pass over gate and up, h exactly as SwigluForward gives
// it: for a backward that needs h (the down projection's adapter gradient) and would otherwise
// recompute it with a forward pass of its own.
std::pair<at::Tensor, at::Tensor> SwigluBackwardAndH(const at::Tensor& dh, const at::Tensor& gate,
                                                     const at::Tensor& up);

}  // namespace qlorad::ops
