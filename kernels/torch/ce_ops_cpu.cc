// CPU implementation of qlorad::ce_loss_grad_: the reference of the CUDA kernel, accumulating in
// fp64 and using a two-pass (max, then sum) log-sum-exp. Formulas: kernels/ce_loss.h.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "kernels/torch/ce_ops.h"

namespace qlorad::ops {
namespace {

template <typename T, typename LossT>
void LossGradRows(T* logits, int64_t rows, int64_t vocab, int64_t row_stride, const int64_t* labels,
                  LossT* loss, int64_t ignore_index, double eps, double z_loss, double scale) {
  for (int64_t r = 0; r < rows; ++r) {
    T* x = logits + r * row_stride;
    const int64_t label = labels[r];
    if (label == ignore_index) {
      for (int64_t j = 0; j < vocab; ++j) x[j] = T(0);
      loss[r] = 0;
      continue;
    }
    double m = -std::numeric_limits<double>::infinity(), sum_x = 0;
    for (int64_t j = 0; j < vocab; ++j) {
      m = std::max(m, static_cast<double>(x[j]));
      sum_x += static_cast<double>(x[j]);
    }
    double s = 0;
    for (int64_t j = 0; j < vocab; ++j) s += std::exp(static_cast<double>(x[j]) - m);
    const double lse = m + std::log(s);
    const bool label_ok = label >= 0 && label < vocab;
    const double target =
        label_ok ? static_cast<double>(x[label]) : std::numeric_limits<double>::quiet_NaN();
    double l = (1 - eps) * (lse - target) + z_loss * lse * lse;
    if (eps != 0) l += eps * (lse - sum_x / static_cast<double>(vocab));
    loss[r] = static_cast<LossT>(l);
    const double coef = 1 + 2 * z_loss * lse;
    for (int64_t j = 0; j < vocab; ++j) {
      double g =
          std::exp(static_cast<double>(x[j]) - lse) * coef - eps / static_cast<double>(vocab);
      if (j == label) g -= 1 - eps;
      x[j] = static_cast<T>(scale * g);
    }
  }
}

at::Tensor LossGradCpu(at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index,
                       double label_smoothing, double z_loss, double grad_scale) {
  detail::CheckCrossEntropyInputs(logits, labels);
  const at::Tensor lab = labels.contiguous();
  const bool fp64 = logits.scalar_type() == at::kDouble;
  at::Tensor loss =
      at::empty({logits.size(0)}, logits.options().dtype(fp64 ? at::kDouble : at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(), "ce_loss_grad_", [&] {
        if (fp64) {
          LossGradRows(logits.data_ptr<scalar_t>(), logits.size(0), logits.size(1),
                       logits.stride(0), lab.data_ptr<int64_t>(), loss.data_ptr<double>(),
                       ignore_index, label_smoothing, z_loss, grad_scale);
        } else {
          LossGradRows(logits.data_ptr<scalar_t>(), logits.size(0), logits.size(1),
                       logits.stride(0), lab.data_ptr<int64_t>(), loss.data_ptr<float>(),
                       ignore_index, label_smoothing, z_loss, grad_scale);
        }
      });
  return loss;
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CPU, m) {
  m.impl("ce_loss_grad_", &LossGradCpu);
}

}  // namespace qlorad::ops
