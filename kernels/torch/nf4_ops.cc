// The qlorad operator library: the NF4 schemas, declared once, and the C++ API of nf4_ops.h, which
// calls them through the dispatcher so that the CPU, CUDA or Meta implementation (nf4_ops_cpu.cc,
// nf4_ops_cuda.cc, nf4_ops_meta.cc) runs according to where the tensors live.
#include "kernels/torch/nf4_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "kernels/torch/nf4_checks.h"

TORCH_LIBRARY(qlorad, m) {
  // The nested tensors come back empty when double_quant is false, since an op's outputs cannot be
  // None; absmax is then fp32, else uint8 codes into nested_code.
  m.def(
      "nf4_quantize(Tensor weight, int blocksize=64, bool double_quant=True) -> "
      "(Tensor packed, Tensor absmax, Tensor nested_absmax, Tensor nested_code, Tensor offset)");
  m.def(
      "nf4_dequantize(Tensor packed, Tensor absmax, Tensor? nested_absmax, Tensor? nested_code, "
      "Tensor? offset, int[] shape, int blocksize, ScalarType dtype) -> Tensor");
  // The out= form returns nothing: torch.compile functionalizes a custom op that mutates an
  // argument, but not one that also returns an alias of it.
  m.def(
      "nf4_dequantize.out(Tensor packed, Tensor absmax, Tensor? nested_absmax, "
      "Tensor? nested_code, Tensor? offset, int[] shape, int blocksize, ScalarType dtype, *, "
      "Tensor(a!) out) -> ()");
}

namespace qlorad::ops {
namespace {

std::optional<at::Tensor> IfDoubleQuant(const NF4Weight& w, const at::Tensor& t) {
  return w.double_quant ? std::optional<at::Tensor>(t) : std::nullopt;
}

}  // namespace

int64_t NF4Weight::numel() const {
  return detail::NumelOf(shape);
}

NF4Weight NF4Weight::to(const at::Device& device) const {
  NF4Weight moved = *this;
  for (at::Tensor* t :
       {&moved.packed, &moved.absmax, &moved.nested_absmax, &moved.nested_code, &moved.offset}) {
    if (t->defined()) *t = t->to(device);
  }
  return moved;
}

NF4Weight QuantizeNF4(const at::Tensor& weight, int64_t blocksize, bool double_quant) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("qlorad::nf4_quantize", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, int64_t, bool)>();
  auto [packed, absmax, nested_absmax, nested_code, offset] =
      op.call(weight, blocksize, double_quant);
  NF4Weight w;
  w.packed = std::move(packed);
  w.absmax = std::move(absmax);
  if (double_quant) {
    w.nested_absmax = std::move(nested_absmax);
    w.nested_code = std::move(nested_code);
    w.offset = std::move(offset);
  }
  w.shape = weight.sizes().vec();
  w.blocksize = blocksize;
  w.double_quant = double_quant;
  w.dtype = weight.scalar_type();
  return w;
}

at::Tensor DequantizeNF4(const NF4Weight& w, at::ScalarType dtype) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("qlorad::nf4_dequantize", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                            at::IntArrayRef, int64_t, at::ScalarType)>();
  return op.call(w.packed, w.absmax, IfDoubleQuant(w, w.nested_absmax),
                 IfDoubleQuant(w, w.nested_code), IfDoubleQuant(w, w.offset), w.shape, w.blocksize,
                 dtype);
}

void DequantizeNF4Out(const NF4Weight& w, at::Tensor& out) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("qlorad::nf4_dequantize", "out")
          .typed<void(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                      const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                      at::IntArrayRef, int64_t, at::ScalarType, at::Tensor&)>();
  op.call(w.packed, w.absmax, IfDoubleQuant(w, w.nested_absmax), IfDoubleQuant(w, w.nested_code),
          IfDoubleQuant(w, w.offset), w.shape, w.blocksize, out.scalar_type(), out);
}

}  // namespace qlorad::ops
