// Validation of the NF4 operators' tensors, shared by the CPU, CUDA and Meta implementations, so
// every device rejects the same inputs with the same readable message ("qlorad::nf4_dequantize:
// packed: expected uint8, got Float").
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace qlorad::ops::detail {

// The quantization state of one weight as the dequantize ops receive it.
struct NF4Args {
  const at::Tensor& packed;
  const at::Tensor& absmax;
  const std::optional<at::Tensor>& nested_absmax;
  const std::optional<at::Tensor>& nested_code;
  const std::optional<at::Tensor>& offset;
  at::IntArrayRef shape;
  int64_t blocksize;
};

int64_t NumelOf(at::IntArrayRef shape);

// Checks the quantize input; fails on a bad dtype or blocksize. Finiteness is checked where the
// values are read (the reference on CPU, the kernel on CUDA).
void CheckQuantizeInputs(const at::Tensor& weight, int64_t blocksize);

// Checks dtypes, sizes, contiguity and devices of the quantized weight and returns whether it is
// double quantized (nested_absmax, nested_code and offset all given) or not (none given).
bool CheckDequantizeInputs(const char* op, const NF4Args& w, at::ScalarType dtype);

// Whether t is the first columns of a wider row-major matrix: 2-D, stride(1) == 1, rows apart by
// at least their length (a column slice of a contiguous matrix, for one).
bool IsRowsOfWiderMatrix(const at::Tensor& t);

// Checks that `out` can receive the dequantized weight: contiguous or IsRowsOfWiderMatrix,
// numel(shape) elements of dtype, on the weight's device.
void CheckOut(const char* op, const NF4Args& w, at::ScalarType dtype, const at::Tensor& out);

// Checks that the lists of nf4_dequantize_many have one entry per weight.
void CheckManyLengths(at::TensorList packed, at::TensorList absmax,
                      const c10::List<std::optional<at::Tensor>>& nested_absmax,
                      const c10::List<std::optional<at::Tensor>>& nested_code,
                      const c10::List<std::optional<at::Tensor>>& offset, at::IntArrayRef blocksize,
                      at::TensorList out);

}  // namespace qlorad::ops::detail
