// CPU implementations of the qlorad NF4 ops: the torch-free reference (kernels/nf4_ref.h) on the
// tensors' memory. This is what CI and CPU-only training run.
#include <torch/library.h>

#include "kernels/nf4_dynamic_map.h"
#include "kernels/nf4_format.h"
#include "kernels/nf4_ref.h"
#include "kernels/torch/float_format.h"
#include "kernels/torch/nf4_checks.h"

namespace qlorad::ops {
namespace {

namespace ref = kernels::ref;
using Quantized = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

void ThrowIfError(const char* op, const Status& s) {
  TORCH_CHECK(s.ok(), op, ": ", s.message());
}

Quantized QuantizeCpu(const at::Tensor& weight, int64_t blocksize, bool double_quant) {
  detail::CheckQuantizeInputs(weight, blocksize);
  // fp16 and bf16 widen to fp32 exactly, as bitsandbytes' kernel widens each value it loads.
  const at::Tensor w = weight.contiguous().to(at::kFloat);
  const int64_t numel = w.numel();
  const int64_t n_blocks = ref::NumBlocks(numel, blocksize);
  const auto bytes = at::TensorOptions().dtype(at::kByte);
  const auto floats = at::TensorOptions().dtype(at::kFloat);
  at::Tensor packed = at::empty({ref::PackedBytes(numel)}, bytes);
  at::Tensor absmax = at::empty({n_blocks}, floats);
  ThrowIfError("qlorad::nf4_quantize",
               ref::QuantizeNF4(w.data_ptr<float>(), numel, blocksize, packed.data_ptr<uint8_t>(),
                                absmax.data_ptr<float>()));
  if (!double_quant)
    return {packed, absmax, at::empty({0}, floats), at::empty({0}, floats), at::empty({0}, floats)};

  // bitsandbytes centres absmax on torch's own mean of it; use the same computation.
  at::Tensor offset = n_blocks > 0 ? absmax.mean() : at::zeros({}, floats);
  at::Tensor codes = at::empty({n_blocks}, bytes);
  at::Tensor nested_absmax =
      at::empty({ref::NumBlocks(n_blocks, kernels::kNestedBlocksize)}, floats);
  ref::DoubleQuantizeAbsmax(absmax.data_ptr<float>(), n_blocks, offset.item<float>(),
                            kernels::kDynamicMapSigned, codes.data_ptr<uint8_t>(),
                            nested_absmax.data_ptr<float>());
  at::Tensor code = at::empty({256}, floats);
  std::copy(std::begin(kernels::kDynamicMapSigned), std::end(kernels::kDynamicMapSigned),
            code.data_ptr<float>());
  return {packed, codes, nested_absmax, code, offset};
}

void DequantizeOutCpu(const at::Tensor& packed, const at::Tensor& absmax,
                      const std::optional<at::Tensor>& nested_absmax,
                      const std::optional<at::Tensor>& nested_code,
                      const std::optional<at::Tensor>& offset, at::IntArrayRef shape,
                      int64_t blocksize, at::ScalarType dtype, at::Tensor& out) {
  const char* op = "qlorad::nf4_dequantize";
  const detail::NF4Args args{packed, absmax, nested_absmax, nested_code, offset, shape, blocksize};
  const bool double_quant = detail::CheckDequantizeInputs(op, args, dtype);
  detail::CheckOut(op, args, dtype, out);
  ref::NF4View view;
  view.packed = packed.data_ptr<uint8_t>();
  view.numel = out.numel();
  view.blocksize = blocksize;
  view.double_quant = double_quant;
  if (double_quant) {
    view.absmax_codes = absmax.data_ptr<uint8_t>();
    view.nested_absmax = nested_absmax->data_ptr<float>();
    view.nested_code = nested_code->data_ptr<float>();
    view.offset = offset->item<float>();
  } else {
    view.absmax = absmax.data_ptr<float>();
  }
  // The reference writes values one after another: into a dense buffer first when out's rows are
  // spaced (the first columns of a wider matrix).
  at::Tensor dense = out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
  ThrowIfError(op, ref::DequantizeNF4(view, FloatFormatOf(dtype, op, "dtype"), dense.data_ptr()));
  if (!dense.is_same(out)) out.copy_(dense);
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CPU, m) {
  m.impl("nf4_quantize", &QuantizeCpu);
  m.impl("nf4_dequantize.out", &DequantizeOutCpu);
}

}  // namespace qlorad::ops
