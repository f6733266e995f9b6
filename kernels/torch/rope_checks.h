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

}  // namespace qlorad::ops::detail
