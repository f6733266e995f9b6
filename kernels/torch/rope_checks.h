// Validation of qlorad::rope_'s tensors, shared by its CPU, CUDA and Meta implementations, so every
// device rejects the same inputs with the same readable message ("qlorad::rope_: cos: expected
// float32, got bfloat16"). Metadata only: nothing here reads values or synchronizes, so positions
// are checked against the table by the CPU implementation alone.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "kernels/rope_params.h"

namespace qlorad::ops::detail {

void CheckRopeInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                     const at::Tensor& sin, const std::optional<at::Tensor>& positions);

// Checks the inputs, then describes the call to the kernels (pointers into the tensors' memory).
kernels::RopeParams RopeParamsOf(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                 const at::Tensor& sin, const std::optional<at::Tensor>& positions,
                                 bool inverse);

// qlorad::rope_into: q_out and k_out as rope_'s q and k (they are written), q and k the sources:
// the same sizes and dtype, head_dim contiguous, any other strides, no memory shared with the
// outputs.
void CheckRopeIntoInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                         const at::Tensor& sin, const std::optional<at::Tensor>& positions,
                         const at::Tensor& q_out, const at::Tensor& k_out);

kernels::RopeParams RopeIntoParamsOf(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& cos, const at::Tensor& sin,
                                     const std::optional<at::Tensor>& positions, bool inverse,
                                     const at::Tensor& q_out, const at::Tensor& k_out);

}  // namespace qlorad::ops::detail
