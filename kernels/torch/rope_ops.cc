// The fused RoPE's schema and the C++ API of rope_ops.h. A fragment of the qlorad library, whose
// main block lives in nf4_ops.cc; implementations in rope_ops_{cpu,cuda,meta}.cc.
#include "kernels/torch/rope_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>

TORCH_LIBRARY_FRAGMENT(qlorad, m) {
  // Mutates q and k and returns nothing: torch.compile functionalizes a custom op that mutates
  // its arguments, not one that also returns an alias of them.
  m.def(
      "rope_(Tensor(a!) q, Tensor(b!) k, Tensor cos, Tensor sin, Tensor? positions=None, "
      "bool inverse=False) -> ()");
  // rope_ from sources: q and k rotated into q_out and k_out, which may be laid out otherwise.
  m.def(
      "rope_into(Tensor q, Tensor k, Tensor cos, Tensor sin, Tensor? positions, bool inverse, "
      "Tensor(a!) q_out, Tensor(b!) k_out) -> ()");
}

namespace qlorad::ops {

void RopeInPlace(at::Tensor& q, at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin,
                 const at::Tensor& positions, bool inverse) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("qlorad::rope_", "")
                       .typed<void(at::Tensor&, at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const std::optional<at::Tensor>&, bool)>();
  op.call(q, k, cos, sin, positions.defined() ? std::optional<at::Tensor>(positions) : std::nullopt,
          inverse);
}

void RopeInto(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
              const at::Tensor& sin, const at::Tensor& positions, bool inverse, at::Tensor& q_out,
              at::Tensor& k_out) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("qlorad::rope_into", "")
          .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      const std::optional<at::Tensor>&, bool, at::Tensor&, at::Tensor&)>();
  op.call(q, k, cos, sin, positions.defined() ? std::optional<at::Tensor>(positions) : std::nullopt,
          inverse, q_out, k_out);
}

}  // namespace qlorad::ops
