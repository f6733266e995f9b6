// Meta implementation of qlorad::rope_ and rope_into: the checks only (they mutate their outputs
// and return nothing), so that torch.compile (fake tensors) traces the ops without running them.
#include <torch/library.h>

#include "kernels/torch/rope_checks.h"

namespace qlorad::ops {
namespace {

void RopeMeta(at::Tensor& q, at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin,
              const std::optional<at::Tensor>& positions, bool /*inverse*/) {
  detail::CheckRopeInputs(q, k, cos, sin, positions);
}

void RopeIntoMeta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                  const at::Tensor& sin, const std::optional<at::Tensor>& positions,
                  bool /*inverse*/, at::Tensor& q_out, at::Tensor& k_out) {
  detail::CheckRopeIntoInputs(q, k, cos, sin, positions, q_out, k_out);
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, Meta, m) {
  m.impl("rope_", &RopeMeta);
  m.impl("rope_into", &RopeIntoMeta);
}

}  // namespace qlorad::ops
