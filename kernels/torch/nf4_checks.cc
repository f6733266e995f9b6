#include "kernels/torch/nf4_checks.h"

#include <string>

#include "kernels/nf4_format.h"
#include "kernels/nf4_ref.h"
#include "kernels/torch/float_format.h"

namespace qlorad::ops::detail {
namespace {

// dense: t must be contiguous (every input; out is checked for its own layouts by CheckOut).
void CheckTensor(const char* op, const char* name, const at::Tensor& t, at::ScalarType dtype,
                 int64_t numel, const at::Device& device, bool dense = true) {
  TORCH_CHECK(t.defined(), op, ": ", name, ": expected a tensor, got None");
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, ": expected ", DTypeName(dtype), ", got ",
              DTypeName(t.scalar_type()));
  TORCH_CHECK(t.numel() == numel, op, ": ", name, ": expected ", numel, " elements, got ",
              t.numel(), " (shape ", t.sizes(), ")");
  TORCH_CHECK(!dense || t.is_contiguous(), op, ": ", name, ": expected a contiguous tensor");
  TORCH_CHECK(t.device() == device, op, ": ", name, ": expected a tensor on ", device,
              " like packed, got one on ", t.device());
}

}  // namespace

int64_t NumelOf(at::IntArrayRef shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    TORCH_CHECK(d >= 0, "qlorad NF4: shape: expected non-negative sizes, got ", shape);
    n *= d;
  }
  return n;
}

void CheckQuantizeInputs(const at::Tensor& weight, int64_t blocksize) {
  const Status s = kernels::ref::CheckBlocksize(blocksize);
  TORCH_CHECK(s.ok(), "qlorad::nf4_quantize: ", s.message());
  TORCH_CHECK(weight.defined(), "qlorad::nf4_quantize: weight: expected a tensor, got None");
  FloatFormatOf(weight.scalar_type(), "qlorad::nf4_quantize", "weight");
}

bool CheckDequantizeInputs(const char* op, const NF4Args& w, at::ScalarType dtype) {
  const Status s = kernels::ref::CheckBlocksize(w.blocksize);
  TORCH_CHECK(s.ok(), op, ": ", s.message());
  FloatFormatOf(dtype, op, "dtype");
  const int64_t numel = NumelOf(w.shape);
  const at::Device device = w.packed.device();
  CheckTensor(op, "packed", w.packed, at::kByte, kernels::ref::PackedBytes(numel), device);

  const int given =
      int{w.nested_absmax.has_value()} + int{w.nested_code.has_value()} + int{w.offset.has_value()};
  TORCH_CHECK(given == 0 || given == 3, op,
              ": nested_absmax, nested_code and offset: expected all three (double quantization) "
              "or none, got ",
              given);
  const bool double_quant = given == 3;
  const int64_t n_blocks = kernels::ref::NumBlocks(numel, w.blocksize);
  if (!double_quant) {
    CheckTensor(op, "absmax", w.absmax, at::kFloat, n_blocks, device);
    return false;
  }
  CheckTensor(op, "absmax", w.absmax, at::kByte, n_blocks, device);
  CheckTensor(op, "nested_absmax", *w.nested_absmax, at::kFloat,
              kernels::ref::NumBlocks(n_blocks, kernels::kNestedBlocksize), device);
  CheckTensor(op, "nested_code", *w.nested_code, at::kFloat, 256, device);
  CheckTensor(op, "offset", *w.offset, at::kFloat, 1, device);
  return true;
}

bool IsRowsOfWiderMatrix(const at::Tensor& t) {
  return t.dim() == 2 && t.stride(1) == 1 && t.stride(0) >= t.size(1);
}

void CheckOut(const char* op, const NF4Args& w, at::ScalarType dtype, const at::Tensor& out) {
  TORCH_CHECK(out.defined(), op, ": out: expected a tensor, got None");
  TORCH_CHECK(out.is_contiguous() || IsRowsOfWiderMatrix(out), op,
              ": out: expected a contiguous tensor or the first columns of a wider matrix (2-D, "
              "stride(1) == 1), got sizes ",
              out.sizes(), " and strides ", out.strides());
  CheckTensor(op, "out", out, dtype, NumelOf(w.shape), w.packed.device(), /*dense=*/false);
}

void CheckManyLengths(at::TensorList packed, at::TensorList absmax,
                      const c10::List<std::optional<at::Tensor>>& nested_absmax,
                      const c10::List<std::optional<at::Tensor>>& nested_code,
                      const c10::List<std::optional<at::Tensor>>& offset, at::IntArrayRef blocksize,
                      at::TensorList out) {
  const size_t n = out.size();
  const std::pair<const char*, size_t> lists[] = {{"packed", packed.size()},
                                                  {"absmax", absmax.size()},
                                                  {"nested_absmax", nested_absmax.size()},
                                                  {"nested_code", nested_code.size()},
                                                  {"offset", offset.size()},
                                                  {"blocksize", blocksize.size()}};
  for (const auto& [name, size] : lists) {
    TORCH_CHECK(size == n, "qlorad::nf4_dequantize_many: ", name, ": expected ", n,
                " entries (one per out tensor), got ", size);
  }
}

}  // namespace qlorad::ops::detail
