// Meta implementation of qlorad::rope_: the checks only (it mutates q and k and returns nothing),
// so that torch.compile (fake tensors) traces the op without running it.
#include <torch/library.h>

#include "kernels/torch/rope_checks.h"

namespace qlorad::ops {
namespace {

void RopeMeta(at::Tensor& q, at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin,
              const std::optional<at::Tensor>& positions, bool /*inverse*/) {
  detail::CheckRopeInputs(q, k, cos, sin, positions);
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, Meta, m) {
  m.impl("rope_", &RopeMeta);
}

}  // namespace qlorad::ops
