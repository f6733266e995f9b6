// CUDA implementation of qlorad::ce_loss_grad_: tensor plumbing around the torch-free launcher
// (kernels/ce_loss.h), on the current stream, without synchronizing.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "kernels/ce_loss.h"
#include "kernels/torch/ce_ops.h"
#include "kernels/torch/float_format.h"

namespace qlorad::ops {
namespace {

at::Tensor LossGradCuda(at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index,
                        double label_smoothing, double z_loss, double grad_scale) {
  detail::CheckCrossEntropyInputs(logits, labels);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor lab = labels.contiguous();
  at::Tensor loss = at::empty({logits.size(0)}, logits.options().dtype(at::kFloat));
  kernels::CrossEntropyParams p;
  p.logits = logits.data_ptr();
  p.rows = logits.size(0);
  p.vocab = logits.size(1);
  p.row_stride = logits.size(0) > 1 ? logits.stride(0) : logits.size(1);
  p.format = FloatFormatOf(logits.scalar_type(), "ce_loss_grad_", "logits");
  p.labels = lab.data_ptr<int64_t>();
  p.loss = loss.data_ptr<float>();
  p.ignore_index = ignore_index;
  p.label_smoothing = static_cast<float>(label_smoothing);
  p.z_loss = static_cast<float>(z_loss);
  p.grad_scale = static_cast<float>(grad_scale);
  const Status s = kernels::LaunchCrossEntropyLossGrad(p, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(s.ok(), "ce_loss_grad_: ", s.message());
  return loss;
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CUDA, m) {
  m.impl("ce_loss_grad_", &LossGradCuda);
}

}  // namespace qlorad::ops
