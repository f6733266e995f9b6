// C++ entry point of the fused cross-entropy operator (schema in ce_ops.cc). Goes through the
// dispatcher: the CUDA kernel (kernels/ce_loss.h) for CUDA tensors, the fp64-accumulating CPU
// reference (ce_ops_cpu.cc) for CPU ones. Formulas: kernels/ce_loss.h.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace qlorad::ops {

struct CrossEntropyKernelOptions {
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  double z_loss = 0.0;
};

// logits [rows, V] (fp32, fp16 or bf16; fp64 on CPU), unit stride along V, are overwritten with
// grad_scale * d(loss_row)/d(logits); returns each row's loss [rows] (fp32; fp64 for fp64 logits).
// labels: int64 [rows] on the same device.
at::Tensor CrossEntropyLossAndGrad_(at::Tensor& logits, const at::Tensor& labels,
                                    const CrossEntropyKernelOptions& options, double grad_scale);

namespace detail {
// All validation of the op's arguments, shared by its implementations.
void CheckCrossEntropyInputs(const at::Tensor& logits, const at::Tensor& labels);
}  // namespace detail

}  // namespace qlorad::ops
