// CUDA implementations of the qlorad NF4 ops: tensor plumbing around the torch-free launchers
// (kernels/nf4_dequant.h, kernels/nf4_quant.h). Everything runs on the current stream; dequantize
// never synchronizes and its out= form allocates nothing (CUDA-graph capturable).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "kernels/nf4_dequant.h"
#include "kernels/nf4_dynamic_map.h"
#include "kernels/nf4_format.h"
#include "kernels/nf4_quant.h"
#include "kernels/nf4_ref.h"
#include "kernels/torch/nf4_checks.h"

namespace qlorad::ops {
namespace {

namespace ref = kernels::ref;

void ThrowIfError(const char* op, const Status& s) {
  TORCH_CHECK(s.ok(), op, ": ", s.message());
}

kernels::InFormat InFormatOf(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return kernels::InFormat::kFloat16;
    case at::kBFloat16:
      return kernels::InFormat::kBFloat16;
    default:
      return kernels::InFormat::kFloat32;
  }
}

kernels::OutFormat OutFormatOf(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return kernels::OutFormat::kFloat16;
    case at::kBFloat16:
      return kernels::OutFormat::kBFloat16;
    default:
      return kernels::OutFormat::kFloat32;
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> QuantizeCuda(
    const at::Tensor& weight, int64_t blocksize, bool double_quant) {
  detail::CheckQuantizeInputs(weight, blocksize);
  const c10::cuda::CUDAGuard guard(weight.device());
  const at::Tensor w = weight.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t numel = w.numel();
  const int64_t n_blocks = ref::NumBlocks(numel, blocksize);
  const auto bytes = w.options().dtype(at::kByte);
  const auto floats = w.options().dtype(at::kFloat);
  at::Tensor packed = at::empty({ref::PackedBytes(numel)}, bytes);
  at::Tensor absmax = at::empty({n_blocks}, floats);
  at::Tensor first_non_finite =
      at::full({}, static_cast<int64_t>(kernels::kNoNonFinite), w.options().dtype(at::kLong));
  ThrowIfError(
      "qlorad::nf4_quantize",
      kernels::LaunchNF4Quantize(
          w.data_ptr(), InFormatOf(w.scalar_type()), numel, blocksize, packed.data_ptr<uint8_t>(),
          absmax.data_ptr<float>(),
          reinterpret_cast<unsigned long long*>(first_non_finite.data_ptr<int64_t>()), stream));
  // Quantization happens once per weight, at load: a sync to report a bad value by index is fine.
  const auto bad = static_cast<unsigned long long>(first_non_finite.item<int64_t>());
  if (bad != kernels::kNoNonFinite) {
    ThrowIfError("qlorad::nf4_quantize",
                 ref::NonFiniteWeight(static_cast<int64_t>(bad / 2), /*is_nan=*/bad % 2 == 0));
  }
  if (!double_quant)
    return {packed, absmax, at::empty({0}, floats), at::empty({0}, floats), at::empty({0}, floats)};

  // Centred on torch's own mean of absmax on this device, as bitsandbytes computes it.
  at::Tensor offset = n_blocks > 0 ? absmax.mean() : at::zeros({}, floats);
  at::Tensor code = at::from_blob(const_cast<float*>(kernels::kDynamicMapSigned), {256}, at::kFloat)
                        .to(w.device());
  at::Tensor codes = at::empty({n_blocks}, bytes);
  at::Tensor nested_absmax =
      at::empty({ref::NumBlocks(n_blocks, kernels::kNestedBlocksize)}, floats);
  ThrowIfError("qlorad::nf4_quantize",
               kernels::LaunchDoubleQuantizeAbsmax(absmax.data_ptr<float>(), n_blocks,
                                                   offset.data_ptr<float>(), code.data_ptr<float>(),
                                                   codes.data_ptr<uint8_t>(),
                                                   nested_absmax.data_ptr<float>(), stream));
  return {packed, codes, nested_absmax, code, offset};
}

void DequantizeOutCuda(const at::Tensor& packed, const at::Tensor& absmax,
                       const std::optional<at::Tensor>& nested_absmax,
                       const std::optional<at::Tensor>& nested_code,
                       const std::optional<at::Tensor>& offset, at::IntArrayRef shape,
                       int64_t blocksize, at::ScalarType dtype, at::Tensor& out) {
  const char* op = "qlorad::nf4_dequantize";
  const detail::NF4Args args{packed, absmax, nested_absmax, nested_code, offset, shape, blocksize};
  const bool double_quant = detail::CheckDequantizeInputs(op, args, dtype);
  detail::CheckOut(op, args, dtype, out);
  const c10::cuda::CUDAGuard guard(packed.device());
  kernels::NF4DequantParams p;
  p.packed = packed.data_ptr<uint8_t>();
  p.numel = out.numel();
  p.blocksize = blocksize;
  p.double_quant = double_quant;
  if (double_quant) {
    p.absmax_codes = absmax.data_ptr<uint8_t>();
    p.nested_absmax = nested_absmax->data_ptr<float>();
    p.nested_code = nested_code->data_ptr<float>();
    p.offset = offset->data_ptr<float>();
  } else {
    p.absmax = absmax.data_ptr<float>();
  }
  p.out = out.data_ptr();
  p.format = OutFormatOf(dtype);
  ThrowIfError(op, kernels::LaunchNF4Dequantize(p, c10::cuda::getCurrentCUDAStream()));
}

at::Tensor DequantizeCuda(const at::Tensor& packed, const at::Tensor& absmax,
                          const std::optional<at::Tensor>& nested_absmax,
                          const std::optional<at::Tensor>& nested_code,
                          const std::optional<at::Tensor>& offset, at::IntArrayRef shape,
                          int64_t blocksize, at::ScalarType dtype) {
  at::Tensor out = at::empty(shape, packed.options().dtype(dtype));
  DequantizeOutCuda(packed, absmax, nested_absmax, nested_code, offset, shape, blocksize, dtype,
                    out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CUDA, m) {
  m.impl("nf4_quantize", &QuantizeCuda);
  m.impl("nf4_dequantize", &DequantizeCuda);
  m.impl("nf4_dequantize.out", &DequantizeOutCuda);
}

}  // namespace qlorad::ops
