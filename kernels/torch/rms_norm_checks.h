// Validation of the fused RMSNorm ops' tensors and the launch parameters built from them, shared by
// the CPU, CUDA and Meta implementations, so every device rejects the same inputs with the same
// message ("qlorad::rms_norm: weight: expected shape [2048], got [1024]").
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "kernels/rms_norm_params.h"

namespace qlorad::ops::detail {

// A forward call after validation: contiguous inputs and the outputs allocated like x.
struct RmsNormForwardTensors {
  at::Tensor x, residual, weight;  // residual undefined for qlorad::rms_norm
  at::Tensor h, y, inv_rms;        // h undefined for qlorad::rms_norm
  int64_t rows = 0;
  int64_t hidden = 0;
  int64_t y_row_stride = 0;  // RmsNormForwardParams::y_row_stride
};

struct RmsNormBackwardTensors {
  at::Tensor dy, x, weight, inv_rms, dresidual;  // dresidual may be undefined
  at::Tensor dx;
  int64_t rows = 0;
  int64_t hidden = 0;
  int64_t dy_row_stride = 0;  // RmsNormBackwardParams::dy_row_stride
};

// `residual` undefined: qlorad::rms_norm, else qlorad::add_rms_norm. Throws naming op and argument.
RmsNormForwardTensors PrepareRmsNormForward(const char* op, const at::Tensor& x,
                                            const at::Tensor& residual, const at::Tensor& weight,
                                            double eps, int64_t spare_columns = 0);
RmsNormBackwardTensors PrepareRmsNormBackward(const at::Tensor& dy, const at::Tensor& x,
                                              const at::Tensor& weight, const at::Tensor& inv_rms,
                                              const std::optional<at::Tensor>& dresidual);

// The kernels' view of a prepared call (pointers into its tensors).
kernels::RmsNormForwardParams ForwardParams(const RmsNormForwardTensors& t, double eps);
kernels::RmsNormBackwardParams BackwardParams(const RmsNormBackwardTensors& t);

}  // namespace qlorad::ops::detail
