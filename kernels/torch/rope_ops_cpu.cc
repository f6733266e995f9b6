// CPU implementation of qlorad::rope_ and rope_into: the torch-free reference (kernels/rope_ref.h)
// on the tensors' memory, its tokens split over torch's CPU threads. This is what CI and CPU-only
// training run.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "kernels/rope_ref.h"
#include "kernels/torch/rope_checks.h"

namespace qlorad::ops {
namespace {

void Rotate(const kernels::RopeParams& p, const char* op) {
  const Status s = kernels::ref::CheckRopePositions(p);
  TORCH_CHECK(s.ok(), op, ": ", s.message());
  const int64_t per_token = std::max<int64_t>(1, (p.q.heads + p.k.heads) * p.head_dim);
  at::parallel_for(0, p.batch * p.seq, std::max<int64_t>(1, at::internal::GRAIN_SIZE / per_token),
                   [&](int64_t begin, int64_t end) { kernels::ref::RopeTokens(p, begin, end); });
}

void RopeCpu(at::Tensor& q, at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin,
             const std::optional<at::Tensor>& positions, bool inverse) {
  Rotate(detail::RopeParamsOf(q, k, cos, sin, positions, inverse), "qlorad::rope_");
}

void RopeIntoCpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                 const at::Tensor& sin, const std::optional<at::Tensor>& positions, bool inverse,
                 at::Tensor& q_out, at::Tensor& k_out) {
  Rotate(detail::RopeIntoParamsOf(q, k, cos, sin, positions, inverse, q_out, k_out),
         "qlorad::rope_into");
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CPU, m) {
  m.impl("rope_", &RopeCpu);
  m.impl("rope_into", &RopeIntoCpu);
}

}  // namespace qlorad::ops
