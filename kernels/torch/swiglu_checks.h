// Validation of the SwiGLU operators' tensors, shared by their CPU, CUDA and Meta implementations,
// so every device rejects the same inputs with the same readable message ("qlorad::swiglu: up:
// expected bfloat16 like gate, got float32"). Metadata only.
#pragma once

#include <ATen/ATen.h>

#include "kernels/swiglu_params.h"

namespace qlorad::ops::detail {

// Checks gate, up and (backward only, else nullptr) dh: defined, one shape [..., I], one float
// dtype, one device, unit stride along I and rows at one stride. `op` names the operator.
void CheckSwigluInputs(const char* op, const at::Tensor& gate, const at::Tensor& up,
                       const at::Tensor* dh);

// The new output: h [..., I] (forward) or dgu [..., 2I] (backward), contiguous, like gate;
// forward with spare_columns > 0: h as the first I columns of a [rows, I + spare_columns] buffer.
// `op` names the operator in the error for spare_columns < 0.
at::Tensor SwigluOutputFor(const char* op, const at::Tensor& gate, bool backward,
                           int64_t spare_columns = 0);

// Checks the inputs, then describes the call to the kernels; the caller sets out (SwigluOutputFor).
kernels::SwigluParams SwigluParamsOf(const char* op, const at::Tensor& gate, const at::Tensor& up,
                                     const at::Tensor* dh);

}  // namespace qlorad::ops::detail
