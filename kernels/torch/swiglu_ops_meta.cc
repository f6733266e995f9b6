// Meta implementations of qlorad::swiglu, qlorad::swiglu_backward and swiglu_backward_and_h:
// checks, shapes and dtypes only, so that torch.compile (fake tensors) traces the ops without
// running them.
#include <torch/library.h>

#include "kernels/torch/swiglu_checks.h"

namespace qlorad::ops {
namespace {

at::Tensor SwigluMeta(const at::Tensor& gate, const at::Tensor& up, int64_t spare_columns) {
  detail::CheckSwigluInputs("qlorad::swiglu", gate, up, nullptr);
  return detail::SwigluOutputFor("qlorad::swiglu", gate, /*backward=*/false, spare_columns);
}

at::Tensor SwigluBackwardMeta(const at::Tensor& dh, const at::Tensor& gate, const at::Tensor& up) {
  detail::CheckSwigluInputs("qlorad::swiglu_backward", gate, up, &dh);
  return detail::SwigluOutputFor("qlorad::swiglu_backward", gate, /*backward=*/true);
}

std::tuple<at::Tensor, at::Tensor> SwigluBackwardAndHMeta(const at::Tensor& dh,
                                                          const at::Tensor& gate,
                                                          const at::Tensor& up) {
  detail::CheckSwigluInputs("qlorad::swiglu_backward_and_h", gate, up, &dh);
  return {detail::SwigluOutputFor("qlorad::swiglu_backward_and_h", gate, /*backward=*/true),
          detail::SwigluOutputFor("qlorad::swiglu_backward_and_h", gate, /*backward=*/false)};
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, Meta, m) {
  m.impl("swiglu", &SwigluMeta);
  m.impl("swiglu_backward", &SwigluBackwardMeta);
  m.impl("swiglu_backward_and_h", &SwigluBackwardAndHMeta);
}

}  // namespace qlorad::ops
