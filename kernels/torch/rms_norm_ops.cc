// The fused RMSNorm's schemas (a fragment of the qlorad library, whose main block lives in
// nf4_ops.cc) and the C++ API of rms_norm_ops.h through the dispatcher. Implementations:
// rms_norm_ops_{cpu,cuda,meta}.cc.
#include "kernels/torch/rms_norm_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>

TORCH_LIBRARY_FRAGMENT(qlorad, m) {
  // No default eps: it is the model's (config rms_norm_eps: 1e-5 for Llama 3, 1e-6 for Qwen2).
  // spare_columns > 0: y is the first H columns of a [rows, H + spare_columns] buffer (its rows
  // that far apart), the rest left for the consumer (a folded LoRA projection writes x A there).
  m.def(
      "rms_norm(Tensor x, Tensor weight, float eps, int spare_columns=0) -> "
      "(Tensor y, Tensor inv_rms)");
  // h = x + residual is returned: it is the next residual stream (and backward's x).
  m.def(
      "add_rms_norm(Tensor x, Tensor residual, Tensor weight, float eps, int spare_columns=0) -> "
      "(Tensor h, Tensor y, Tensor inv_rms)");
  m.def(
      "rms_norm_backward(Tensor dy, Tensor x, Tensor weight, Tensor inv_rms, "
      "Tensor? dresidual=None) -> Tensor dx");
}

namespace qlorad::ops {

std::tuple<at::Tensor, at::Tensor> RmsNormForward(const at::Tensor& x, const at::Tensor& weight,
                                                  double eps, int64_t spare_columns) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("qlorad::rms_norm", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, double, int64_t)>();
  return op.call(x, weight, eps, spare_columns);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> AddRmsNormForward(const at::Tensor& x,
                                                                 const at::Tensor& residual,
                                                                 const at::Tensor& weight,
                                                                 double eps,
                                                                 int64_t spare_columns) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("qlorad::add_rms_norm", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, double, int64_t)>();
  return op.call(x, residual, weight, eps, spare_columns);
}

at::Tensor RmsNormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                           const at::Tensor& inv_rms, const at::Tensor& dresidual) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("qlorad::rms_norm_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, const std::optional<at::Tensor>&)>();
  return op.call(dy, x, weight, inv_rms,
                 dresidual.defined() ? std::optional<at::Tensor>(dresidual) : std::nullopt);
}

}  // namespace qlorad::ops
