// Meta implementations of the qlorad NF4 ops: shapes and dtypes only, so that torch.compile (fake
// tensors) traces the ops without a graph break and without running them.
#include <torch/library.h>

#include "kernels/nf4_format.h"
#include "kernels/nf4_ref.h"
#include "kernels/torch/nf4_checks.h"

namespace qlorad::ops {
namespace {

namespace ref = kernels::ref;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> QuantizeMeta(
    const at::Tensor& weight, int64_t blocksize, bool double_quant) {
  detail::CheckQuantizeInputs(weight, blocksize);
  const int64_t numel = weight.numel();
  const int64_t n_blocks = ref::NumBlocks(numel, blocksize);
  const auto bytes = weight.options().dtype(at::kByte);
  const auto floats = weight.options().dtype(at::kFloat);
  at::Tensor packed = at::empty({ref::PackedBytes(numel)}, bytes);
  if (!double_quant) {
    return {packed, at::empty({n_blocks}, floats), at::empty({0}, floats), at::empty({0}, floats),
            at::empty({0}, floats)};
  }
  return {packed, at::empty({n_blocks}, bytes),
          at::empty({ref::NumBlocks(n_blocks, kernels::kNestedBlocksize)}, floats),
          at::empty({256}, floats), at::empty({}, floats)};
}

void DequantizeOutMeta(const at::Tensor& packed, const at::Tensor& absmax,
                       const std::optional<at::Tensor>& nested_absmax,
                       const std::optional<at::Tensor>& nested_code,
                       const std::optional<at::Tensor>& offset, at::IntArrayRef shape,
                       int64_t blocksize, at::ScalarType dtype, at::Tensor& out) {
  const detail::NF4Args args{packed, absmax, nested_absmax, nested_code, offset, shape, blocksize};
  detail::CheckDequantizeInputs("qlorad::nf4_dequantize", args, dtype);
  detail::CheckOut("qlorad::nf4_dequantize", args, dtype, out);
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, Meta, m) {
  m.impl("nf4_quantize", &QuantizeMeta);
  m.impl("nf4_dequantize.out", &DequantizeOutMeta);
}

}  // namespace qlorad::ops
