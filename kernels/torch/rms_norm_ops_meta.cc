// Meta implementations of the fused RMSNorm ops: validation and output shapes only, so that
// torch.compile (fake tensors) traces them without running anything.
#include <torch/library.h>

#include "kernels/torch/rms_norm_impl.h"

namespace qlorad::ops {
namespace {

struct Meta {
  static void Run(const detail::RmsNormForwardTensors&, double) {}
  static void Run(const detail::RmsNormBackwardTensors&) {}
};

using Impl = detail::RmsNormImpl<Meta>;

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, Meta, m) {
  m.impl("rms_norm", &Impl::Forward);
  m.impl("add_rms_norm", &Impl::AddForward);
  m.impl("rms_norm_backward", &Impl::Backward);
}

}  // namespace qlorad::ops
