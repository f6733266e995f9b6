// CPU implementations of the fused RMSNorm ops: the torch-free reference (kernels/rms_norm_ref.h)
// over the tensors' memory, rows split across torch's intra-op threads.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "kernels/rms_norm_ref.h"
#include "kernels/torch/rms_norm_impl.h"

namespace qlorad::ops {
namespace {

// Rows a thread takes at least: about 32K values, so small calls stay on one thread.
int64_t GrainRows(int64_t hidden) {
  return std::max<int64_t>(1, (int64_t{1} << 15) / hidden);
}

struct Cpu {
  static void Run(const detail::RmsNormForwardTensors& t, double eps) {
    const kernels::RmsNormForwardParams p = detail::ForwardParams(t, eps);
    at::parallel_for(0, p.rows, GrainRows(p.hidden), [&](int64_t begin, int64_t end) {
      kernels::ref::RmsNormForwardRows(p, begin, end);
    });
  }
  static void Run(const detail::RmsNormBackwardTensors& t) {
    const kernels::RmsNormBackwardParams p = detail::BackwardParams(t);
    at::parallel_for(0, p.rows, GrainRows(p.hidden), [&](int64_t begin, int64_t end) {
      kernels::ref::RmsNormBackwardRows(p, begin, end);
    });
  }
};

using Impl = detail::RmsNormImpl<Cpu>;

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CPU, m) {
  m.impl("rms_norm", &Impl::Forward);
  m.impl("add_rms_norm", &Impl::AddForward);
  m.impl("rms_norm_backward", &Impl::Backward);
}

}  // namespace qlorad::ops
