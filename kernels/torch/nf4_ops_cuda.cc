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
#include "kernels/torch/float_format.h"
#include "kernels/torch/nf4_checks.h"

namespace qlorad::ops {
namespace {

namespace ref = kernels::ref;

void ThrowIfError(const char* op, const Status& s) {
  TORCH_CHECK(s.ok(), op, ": ", s.message());
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
          w.data_ptr(), FloatFormatOf(w.scalar_type(), "qlorad::nf4_quantize", "weight"), numel,
          blocksize, packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(),
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

// Validates one weight and its out tensor and describes them to the launcher.
kernels::NF4DequantParams ParamsOf(const char* op, const detail::NF4Args& args,
                                   at::ScalarType dtype, at::Tensor& out) {
  const bool double_quant = detail::CheckDequantizeInputs(op, args, dtype);
  detail::CheckOut(op, args, dtype, out);
  kernels::NF4DequantParams p;
  p.packed = args.packed.data_ptr<uint8_t>();
  p.numel = out.numel();
  p.blocksize = args.blocksize;
  p.double_quant = double_quant;
  if (double_quant) {
    p.absmax_codes = args.absmax.data_ptr<uint8_t>();
    p.nested_absmax = args.nested_absmax->data_ptr<float>();
    p.nested_code = args.nested_code->data_ptr<float>();
    p.offset = args.offset->data_ptr<float>();
  } else {
    p.absmax = args.absmax.data_ptr<float>();
  }
  p.out = out.data_ptr();
  p.format = FloatFormatOf(dtype, op, "dtype");
  if (!out.is_contiguous()) {  // the first columns of a wider matrix (CheckOut)
    p.row_length = out.size(1);
    p.row_stride = out.stride(0);
  }
  return p;
}

void DequantizeOutCuda(const at::Tensor& packed, const at::Tensor& absmax,
                       const std::optional<at::Tensor>& nested_absmax,
                       const std::optional<at::Tensor>& nested_code,
                       const std::optional<at::Tensor>& offset, at::IntArrayRef shape,
                       int64_t blocksize, at::ScalarType dtype, at::Tensor& out) {
  const char* op = "qlorad::nf4_dequantize";
  const detail::NF4Args args{packed, absmax, nested_absmax, nested_code, offset, shape, blocksize};
  const kernels::NF4DequantParams p = ParamsOf(op, args, dtype, out);
  const c10::cuda::CUDAGuard guard(packed.device());
  ThrowIfError(op, kernels::LaunchNF4Dequantize(p, c10::cuda::getCurrentCUDAStream()));
}

void DequantizeManyOutCuda(at::TensorList packed, at::TensorList absmax,
                           const c10::List<std::optional<at::Tensor>>& nested_absmax,
                           const c10::List<std::optional<at::Tensor>>& nested_code,
                           const c10::List<std::optional<at::Tensor>>& offset,
                           at::IntArrayRef blocksize, at::TensorList out) {
  const char* op = "qlorad::nf4_dequantize_many";
  detail::CheckManyLengths(packed, absmax, nested_absmax, nested_code, offset, blocksize, out);
  if (out.empty()) return;
  std::vector<kernels::NF4DequantParams> params;
  for (size_t i = 0; i < out.size(); ++i) {
    const std::optional<at::Tensor> nested_absmax_i = nested_absmax[i];
    const std::optional<at::Tensor> nested_code_i = nested_code[i];
    const std::optional<at::Tensor> offset_i = offset[i];
    at::Tensor out_i = out[i];
    const detail::NF4Args args{packed[i], absmax[i],     nested_absmax_i, nested_code_i,
                               offset_i,  out_i.sizes(), blocksize[i]};
    const std::string what = std::string(op) + ": weight " + std::to_string(i);
    params.push_back(ParamsOf(what.c_str(), args, out_i.scalar_type(), out_i));
    TORCH_CHECK(out_i.device() == out[0].device(), op, ": out[", i, "] is on ", out_i.device(),
                ", out[0] on ", out[0].device(), ": one call serves one device");
  }
  const c10::cuda::CUDAGuard guard(out[0].device());
  ThrowIfError(op, kernels::LaunchNF4DequantizeMany(params.data(), static_cast<int>(params.size()),
                                                    c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CUDA, m) {
  m.impl("nf4_quantize", &QuantizeCuda);
  m.impl("nf4_dequantize.out", &DequantizeOutCuda);
  m.impl("nf4_dequantize_many.out", &DequantizeManyOutCuda);
}

}  // namespace qlorad::ops
