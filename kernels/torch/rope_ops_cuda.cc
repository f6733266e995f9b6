// CUDA implementation of qlorad::rope_ and rope_into: tensor plumbing around the torch-free
// launcher (kernels/rope.h), on the current stream, without synchronizing or allocating.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "kernels/rope.h"
#include "kernels/torch/rope_checks.h"

namespace qlorad::ops {
namespace {

void RopeCuda(at::Tensor& q, at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin,
              const std::optional<at::Tensor>& positions, bool inverse) {
  const kernels::RopeParams p = detail::RopeParamsOf(q, k, cos, sin, positions, inverse);
  const c10::cuda::CUDAGuard guard(q.device());
  const Status s = kernels::LaunchRope(p, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(s.ok(), "qlorad::rope_: ", s.message());
}

void RopeIntoCuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                  const at::Tensor& sin, const std::optional<at::Tensor>& positions, bool inverse,
                  at::Tensor& q_out, at::Tensor& k_out) {
  const kernels::RopeParams p =
      detail::RopeIntoParamsOf(q, k, cos, sin, positions, inverse, q_out, k_out);
  const c10::cuda::CUDAGuard guard(q_out.device());
  const Status s = kernels::LaunchRope(p, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(s.ok(), "qlorad::rope_into: ", s.message());
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CUDA, m) {
  m.impl("rope_", &RopeCuda);
  m.impl("rope_into", &RopeIntoCuda);
}

}  // namespace qlorad::ops
