// CUDA implementations of the fused RMSNorm ops: tensor plumbing around the torch-free launchers
// (kernels/rms_norm.h), on the current stream, without synchronizing.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "kernels/rms_norm.h"
#include "kernels/torch/rms_norm_impl.h"

namespace qlorad::ops {
namespace {

struct Cuda {
  static void Run(const detail::RmsNormForwardTensors& t, double eps) {
    const c10::cuda::CUDAGuard guard(t.x.device());
    const Status s = kernels::LaunchRmsNormForward(detail::ForwardParams(t, eps),
                                                   c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(s.ok(), t.residual.defined() ? "qlorad::add_rms_norm: " : "qlorad::rms_norm: ",
                s.message());
  }
  static void Run(const detail::RmsNormBackwardTensors& t) {
    const c10::cuda::CUDAGuard guard(t.x.device());
    const Status s = kernels::LaunchRmsNormBackward(detail::BackwardParams(t),
                                                    c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(s.ok(), "qlorad::rms_norm_backward: ", s.message());
  }
};

using Impl = detail::RmsNormImpl<Cuda>;

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CUDA, m) {
  m.impl("rms_norm", &Impl::Forward);
  m.impl("add_rms_norm", &Impl::AddForward);
  m.impl("rms_norm_backward", &Impl::Backward);
}

}  // namespace qlorad::ops
