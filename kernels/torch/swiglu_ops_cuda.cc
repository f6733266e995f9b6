// CUDA implementations of qlorad::swiglu, qlorad::swiglu_backward and swiglu_backward_and_h: tensor
// plumbing around the torch-free launchers (kernels/swiglu.h), on the current stream, without
// synchronizing.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "kernels/swiglu.h"
#include "kernels/torch/swiglu_checks.h"

namespace qlorad::ops {
namespace {

// Validates, allocates the output on gate's device and enqueues the kernel on the current stream;
// backward also writes h into *h_out when it is given (allocated here).
at::Tensor Run(const char* op, const at::Tensor& gate, const at::Tensor& up, const at::Tensor* dh,
               at::Tensor* h_out = nullptr, int64_t spare_columns = 0) {
  kernels::SwigluParams p = detail::SwigluParamsOf(op, gate, up, dh);
  const c10::cuda::CUDAGuard guard(gate.device());
  at::Tensor out = detail::SwigluOutputFor(op, gate, /*backward=*/dh != nullptr, spare_columns);
  p.out = out.data_ptr();
  if (spare_columns > 0) p.out_stride = p.cols + spare_columns;
  if (h_out != nullptr) {
    *h_out = detail::SwigluOutputFor(op, gate, /*backward=*/false);
    p.h_out = h_out->data_ptr();
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Status s = dh != nullptr ? kernels::LaunchSwigluBackward(p, stream)
                                 : kernels::LaunchSwigluForward(p, stream);
  TORCH_CHECK(s.ok(), op, ": ", s.message());
  return out;
}

at::Tensor SwigluCuda(const at::Tensor& gate, const at::Tensor& up, int64_t spare_columns) {
  return Run("qlorad::swiglu", gate, up, nullptr, nullptr, spare_columns);
}

at::Tensor SwigluBackwardCuda(const at::Tensor& dh, const at::Tensor& gate, const at::Tensor& up) {
  return Run("qlorad::swiglu_backward", gate, up, &dh);
}

std::tuple<at::Tensor, at::Tensor> SwigluBackwardAndHCuda(const at::Tensor& dh,
                                                          const at::Tensor& gate,
                                                          const at::Tensor& up) {
  at::Tensor h;
  at::Tensor dgu = Run("qlorad::swiglu_backward_and_h", gate, up, &dh, &h);
  return {dgu, h};
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CUDA, m) {
  m.impl("swiglu", &SwigluCuda);
  m.impl("swiglu_backward", &SwigluBackwardCuda);
  m.impl("swiglu_backward_and_h", &SwigluBackwardAndHCuda);
}

}  // namespace qlorad::ops
