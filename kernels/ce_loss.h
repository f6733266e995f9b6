// Fused cross-entropy over a chunk of logits, the fast path of the trainer's chunked lm_head loss
// (worker/trainer/loss/chunked_loss.h). One thread block per row: a first sweep over the vocabulary
// keeps an online log-sum-exp (running max and rescaled sum) and the sum of the logits; a second
// sweep writes d(loss)/d(logits) over the logits in place, so the chunk needs no second [rows, V]
// buffer. Per row, with lse = log sum_j exp(x_j), p_j = exp(x_j - lse), eps = label_smoothing,
// z = z_loss and t the label:
//   loss   = (1 - eps) * (lse - x_t) + eps * (lse - mean_j x_j) + z * lse^2
//   grad_j = scale * (p_j * (1 + 2 z lse) - (1 - eps) * [j == t] - eps / V)
// Rows whose label is ignore_index get loss 0 and gradient 0. A label outside [0, V) gives a NaN
// loss (the kernel cannot raise; NaN makes the step fail loudly instead of training on garbage).
// Torch-free: raw pointers, sizes and a stream; kernels in ce_loss_kernels.cuh.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/status.h"
#include "kernels/float_format.h"

namespace qlorad::kernels {

struct CrossEntropyParams {
  void* logits = nullptr;  // [rows, row_stride] of `format`; read, then overwritten
  int64_t rows = 0;
  int64_t vocab = 0;
  int64_t row_stride = 0;  // elements between rows, >= vocab
  FloatFormat format = FloatFormat::kFloat32;
  const int64_t* labels = nullptr;  // [rows]
  float* loss = nullptr;            // [rows], fp32
  int64_t ignore_index = -100;
  float label_smoothing = 0.0f;
  float z_loss = 0.0f;
  float grad_scale = 1.0f;  // multiplies the gradient (not the loss)
};

// Enqueues the kernel on `stream`; never synchronizes and allocates nothing.
Status LaunchCrossEntropyLossGrad(const CrossEntropyParams& p, cudaStream_t stream);

}  // namespace qlorad::kernels
