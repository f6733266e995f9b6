// The fused SwiGLU's schemas and the C++ API of swiglu_ops.h. A fragment of the qlorad library,
// whose main block lives in nf4_ops.cc; implementations in swiglu_ops_{cpu,cuda,meta}.cc.
#include "kernels/torch/swiglu_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(qlorad, m) {
  // spare_columns > 0: h is the first I columns of a [rows, I + spare_columns] buffer (its rows
  // spaced wider), the rest left for the caller (the down projection's x A^T).
  m.def("swiglu(Tensor gate, Tensor up, int spare_columns=0) -> Tensor");
  // d(gate) and d(up) in one [..., 2I] tensor: one GEMM then gives dX for both projections.
  m.def("swiglu_backward(Tensor dh, Tensor gate, Tensor up) -> Tensor");
  // The same, plus h = swiglu(gate, up) from the values it reads anyway: (dgu, h).
  m.def("swiglu_backward_and_h(Tensor dh, Tensor gate, Tensor up) -> (Tensor, Tensor)");
}

namespace qlorad::ops {

at::Tensor SwigluForward(const at::Tensor& gate, const at::Tensor& up, int64_t spare_columns) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("qlorad::swiglu", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(gate, up, spare_columns);
}

at::Tensor SwigluBackward(const at::Tensor& dh, const at::Tensor& gate, const at::Tensor& up) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("qlorad::swiglu_backward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(dh, gate, up);
}

std::pair<at::Tensor, at::Tensor> SwigluBackwardAndH(const at::Tensor& dh, const at::Tensor& gate,
                                                     const at::Tensor& up) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("qlorad::swiglu_backward_and_h", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  auto [dgu, h] = op.call(dh, gate, up);
  return {dgu, h};
}

}  // namespace qlorad::ops
