// CPU implementations of qlorad::swiglu, qlorad::swiglu_backward and swiglu_backward_and_h: the
// torch-free reference (kernels/swiglu_ref.h) on the tensors' memory, its rows split over torch's
// CPU threads. This is what CI and CPU-only training run.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "kernels/swiglu_ref.h"
#include "kernels/torch/swiglu_checks.h"

namespace qlorad::ops {
namespace {

using RowsFn = void (*)(const kernels::SwigluParams&, int64_t, int64_t);

// Validates, allocates the output and runs `rows` over all rows in parallel; backward also writes
// h into *h_out when it is given (allocated here).
at::Tensor Run(const char* op, const at::Tensor& gate, const at::Tensor& up, const at::Tensor* dh,
               RowsFn rows, at::Tensor* h_out = nullptr, int64_t spare_columns = 0) {
  kernels::SwigluParams p = detail::SwigluParamsOf(op, gate, up, dh);
  at::Tensor out = detail::SwigluOutputFor(op, gate, /*backward=*/dh != nullptr, spare_columns);
  p.out = out.data_ptr();
  if (spare_columns > 0) p.out_stride = p.cols + spare_columns;
  if (h_out != nullptr) {
    *h_out = detail::SwigluOutputFor(op, gate, /*backward=*/false);
    p.h_out = h_out->data_ptr();
  }
  const int64_t grain =
      std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, p.cols));
  at::parallel_for(0, p.rows, grain, [&](int64_t begin, int64_t end) { rows(p, begin, end); });
  return out;
}

at::Tensor SwigluCpu(const at::Tensor& gate, const at::Tensor& up, int64_t spare_columns) {
  return Run("qlorad::swiglu", gate, up, nullptr, &kernels::ref::SwigluForwardRows, nullptr,
             spare_columns);
}

at::Tensor SwigluBackwardCpu(const at::Tensor& dh, const at::Tensor& gate, const at::Tensor& up) {
  return Run("qlorad::swiglu_backward", gate, up, &dh, &kernels::ref::SwigluBackwardRows);
}

std::tuple<at::Tensor, at::Tensor> SwigluBackwardAndHCpu(const at::Tensor& dh,
                                                         const at::Tensor& gate,
                                                         const at::Tensor& up) {
  at::Tensor h;
  at::Tensor dgu =
      Run("qlorad::swiglu_backward_and_h", gate, up, &dh, &kernels::ref::SwigluBackwardRows, &h);
  return {dgu, h};
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CPU, m) {
  m.impl("swiglu", &SwigluCpu);
  m.impl("swiglu_backward", &SwigluBackwardCpu);
  m.impl("swiglu_backward_and_h", &SwigluBackwardAndHCpu);
}

}  // namespace qlorad::ops
