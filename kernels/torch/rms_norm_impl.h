// The fused RMSNorm ops' implementations, written once over the device's way of running a
// prepared call: validation, contiguity and output allocation (rms_norm_checks.h) are the same on
// CPU, CUDA and Meta; only Device::Run differs (the reference over rows, the CUDA launch, nothing).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "kernels/torch/rms_norm_checks.h"

namespace qlorad::ops::detail {

// Device: static void Run(const RmsNormForwardTensors&, double eps) and
//         static void Run(const RmsNormBackwardTensors&).
template <typename Device>
struct RmsNormImpl {
  static std::tuple<at::Tensor, at::Tensor> Forward(const at::Tensor& x, const at::Tensor& weight,
                                                    double eps, int64_t spare_columns) {
    const RmsNormForwardTensors t =
        PrepareRmsNormForward("qlorad::rms_norm", x, at::Tensor(), weight, eps, spare_columns);
    Device::Run(t, eps);
    return {t.y, t.inv_rms};
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> AddForward(const at::Tensor& x,
                                                                   const at::Tensor& residual,
                                                                   const at::Tensor& weight,
                                                                   double eps,
                                                                   int64_t spare_columns) {
    const RmsNormForwardTensors t =
        PrepareRmsNormForward("qlorad::add_rms_norm", x, residual, weight, eps, spare_columns);
    Device::Run(t, eps);
    return {t.h, t.y, t.inv_rms};
  }

  static at::Tensor Backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& inv_rms,
                             const std::optional<at::Tensor>& dresidual) {
    const RmsNormBackwardTensors t = PrepareRmsNormBackward(dy, x, weight, inv_rms, dresidual);
    Device::Run(t);
    return t.dx;
  }
};

}  // namespace qlorad::ops::detail
