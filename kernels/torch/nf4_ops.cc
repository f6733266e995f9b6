// The qlorad operator library: the NF4 schemas, declared once; the device-independent forms
// (CompositeExplicitAutograd: built on the out= ops, so every backend, Meta included, gets them);
// and the C++ API of nf4_ops.h, which calls the ops through the dispatcher so that the CPU, CUDA or
// Meta implementation (nf4_ops_cpu.cc, nf4_ops_cuda.cc, nf4_ops_meta.cc) runs according to where
// the tensors live.
#include "kernels/torch/nf4_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>

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
  // Several weights at once (one CUDA launch per output format); each out gives its weight's shape
  // and dtype. An entry's nested tensors are None when it is not double quantized.
  m.def(
      "nf4_dequantize_many.out(Tensor[] packed, Tensor[] absmax, Tensor?[] nested_absmax, "
      "Tensor?[] nested_code, Tensor?[] offset, int[] blocksize, *, Tensor(a!)[] out) -> ()");
}

namespace qlorad::ops {
namespace {

using OptionalTensors = c10::List<std::optional<at::Tensor>>;

const auto& DequantizeOutOp() {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("qlorad::nf4_dequantize", "out")
          .typed<void(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                      const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                      at::IntArrayRef, int64_t, at::ScalarType, at::Tensor&)>();
  return op;
}

at::Tensor DequantizeFunctional(const at::Tensor& packed, const at::Tensor& absmax,
                                const std::optional<at::Tensor>& nested_absmax,
                                const std::optional<at::Tensor>& nested_code,
                                const std::optional<at::Tensor>& offset, at::IntArrayRef shape,
                                int64_t blocksize, at::ScalarType dtype) {
  at::Tensor out = at::empty(shape, packed.options().dtype(dtype));
  DequantizeOutOp().call(packed, absmax, nested_absmax, nested_code, offset, shape, blocksize,
                         dtype, out);
  return out;
}

// One weight at a time: what the CPU and Meta backends need (CUDA has its grouped launch).
void DequantizeManyOneByOne(at::TensorList packed, at::TensorList absmax,
                            const OptionalTensors& nested_absmax,
                            const OptionalTensors& nested_code, const OptionalTensors& offset,
                            at::IntArrayRef blocksize, at::TensorList out) {
  detail::CheckManyLengths(packed, absmax, nested_absmax, nested_code, offset, blocksize, out);
  for (size_t i = 0; i < packed.size(); ++i) {
    at::Tensor out_i = out[i];
    // Checked here too, so that an error names the weight's index in the list.
    const std::optional<at::Tensor> nested_absmax_i = nested_absmax[i];
    const std::optional<at::Tensor> nested_code_i = nested_code[i];
    const std::optional<at::Tensor> offset_i = offset[i];
    const detail::NF4Args args{packed[i], absmax[i],     nested_absmax_i, nested_code_i,
                               offset_i,  out_i.sizes(), blocksize[i]};
    const std::string what = "qlorad::nf4_dequantize_many: weight " + std::to_string(i);
    detail::CheckDequantizeInputs(what.c_str(), args, out_i.scalar_type());
    detail::CheckOut(what.c_str(), args, out_i.scalar_type(), out_i);
    DequantizeOutOp().call(packed[i], absmax[i], nested_absmax[i], nested_code[i], offset[i],
                           out_i.sizes(), blocksize[i], out_i.scalar_type(), out_i);
  }
}

std::optional<at::Tensor> IfDoubleQuant(const NF4Weight& w, const at::Tensor& t) {
  return w.double_quant ? std::optional<at::Tensor>(t) : std::nullopt;
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CompositeExplicitAutograd, m) {
  m.impl("nf4_dequantize", &DequantizeFunctional);
  m.impl("nf4_dequantize_many.out", &DequantizeManyOneByOne);
}

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
  DequantizeOutOp().call(w.packed, w.absmax, IfDoubleQuant(w, w.nested_absmax),
                         IfDoubleQuant(w, w.nested_code), IfDoubleQuant(w, w.offset), w.shape,
                         w.blocksize, out.scalar_type(), out);
}

void DequantizeNF4ManyOut(const std::vector<const NF4Weight*>& weights, at::TensorList out) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("qlorad::nf4_dequantize_many", "out")
                       .typed<void(at::TensorList, at::TensorList, const OptionalTensors&,
                                   const OptionalTensors&, const OptionalTensors&, at::IntArrayRef,
                                   at::TensorList)>();
  std::vector<at::Tensor> packed, absmax;
  OptionalTensors nested_absmax, nested_code, offset;
  std::vector<int64_t> blocksize;
  for (const NF4Weight* w : weights) {
    packed.push_back(w->packed);
    absmax.push_back(w->absmax);
    nested_absmax.push_back(IfDoubleQuant(*w, w->nested_absmax));
    nested_code.push_back(IfDoubleQuant(*w, w->nested_code));
    offset.push_back(IfDoubleQuant(*w, w->offset));
    blocksize.push_back(w->blocksize);
  }
  op.call(packed, absmax, nested_absmax, nested_code, offset, blocksize, out);
}

}  // namespace qlorad::ops
