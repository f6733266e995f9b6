// C++ entry points of the fused RMSNorm operators (schemas in rms_norm_ops.cc). They go through
// the dispatcher: the CUDA kernels (kernels/rms_norm.h) for CUDA tensors, the CPU reference
// (kernels/rms_norm_ref.h) for CPU ones, shapes only under Meta. Formulas and roundings (those of
// Hugging Face's LlamaRMSNorm): kernels/rms_norm_params.h. No autograd: the trainer's autograd
// functions call the forward and the backward explicitly, saving only x (or h) and inv_rms.
//
// x [..., H] (fp32, fp16 or bf16) with its last dimension contiguous; weight [H] of x's dtype;
// all tensors on one device. Rows are the x.numel() / H vectors of length H.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace qlorad::ops {

// y [like x], inv_rms fp32 [rows] (rows = x.numel() / H). spare_columns > 0: y is the first H
// columns of a [rows, H + spare_columns] buffer (a view, rows that far apart); the other columns
// are the caller's (uninitialized).
std::tuple<at::Tensor, at::Tensor> RmsNormForward(const at::Tensor& x, const at::Tensor& weight,
                                                  double eps, int64_t spare_columns = 0);

// h = x + residual, then RmsNormForward(h): returns (h, y, inv_rms)
std::tuple<at::Tensor, at::Tensor, at::Tensor> AddRmsNormForward(const at::Tensor& x,
                                                                 const at::Tensor& residual,
                                                                 const at::Tensor& weight,
                                                                 double eps,
                                                                 int64_t spare_columns = 0);

// dx in x's dtype; `dresidual` (optional: an undefined tensor = none) is added into dx.
// x is the forward's normalized input (h of AddRmsNormForward), inv_rms the forward's.
at::Tensor RmsNormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                           const at::Tensor& inv_rms, const at::Tensor& dresidual);

}  // namespace qlorad::ops
