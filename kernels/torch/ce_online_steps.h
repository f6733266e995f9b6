// Internals of qlorad::linear_ce_online (ce_online_ops.h): the buffers of one call and the two
// device steps the loop over chunks and tiles calls (ce_online_ops.cc). Each device implements the
// steps (ce_online_ops_cpu.cc, ce_online_ops_cuda.cc) and registers the op with its factory, so the
// per-tile work is a plain virtual call: no dispatcher, no tensor views and, on CUDA, the cuBLAS
// handle set up once per call instead of per matmul (the host had ~30 us per tile otherwise, as
// much as the GPU's work on a 512 x 4096 tile).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <tuple>

#include "kernels/torch/ce_ops.h"

namespace qlorad::ops::detail {

struct OnlineCeBuffers {
  at::Tensor hidden;         // [N, d], contiguous
  at::Tensor weight;         // [V, d], contiguous, hidden's dtype
  at::Tensor labels;         // [N] int64, contiguous
  at::Tensor weight_colsum;  // [d] in acc's dtype when label smoothing needs it, else empty
  at::Tensor state;          // [rows, kOnlineCeStateWidth], fp32 (fp64 for fp64 inputs)
  at::Tensor acc;            // [rows, d], as state; empty: no gradient
  at::Tensor tile;           // [rows * cols] in hidden's dtype
  at::Tensor losses;         // [N], as state
  at::Tensor grad;           // [N, d] in hidden's dtype; empty: no gradient
  CrossEntropyKernelOptions options;
};

class OnlineCeSteps {
 public:
  virtual ~OnlineCeSteps() = default;
  // Rows [start, start + rows) against the vocabulary [v0, v0 + cols): the logits into the tile
  // buffer (as a contiguous [rows, cols]), the fold into state (first_tile: v0 == 0), and P @ W
  // into acc.
  virtual void Tile(int64_t start, int64_t rows, int64_t v0, int64_t cols) = 0;
  // Those rows' losses and gradient from state and acc.
  virtual void Finish(int64_t start, int64_t rows) = 0;
};

using OnlineCeStepsFactory = std::unique_ptr<OnlineCeSteps> (*)(const OnlineCeBuffers&);

// The whole op for one device: validation, sizes, buffers, the loop.
std::tuple<at::Tensor, at::Tensor> RunLinearCeOnline(const at::Tensor& hidden,
                                                     const at::Tensor& weight,
                                                     const at::Tensor& labels, int64_t ignore_index,
                                                     double label_smoothing, double z_loss,
                                                     int64_t rows, int64_t cols, bool compute_grad,
                                                     OnlineCeStepsFactory make_steps);

// The op's kernel for a device whose steps kMakeSteps makes: what each device registers.
template <OnlineCeStepsFactory kMakeSteps>
std::tuple<at::Tensor, at::Tensor> LinearCeOnlineWith(const at::Tensor& hidden,
                                                      const at::Tensor& weight,
                                                      const at::Tensor& labels,
                                                      int64_t ignore_index, double label_smoothing,
                                                      double z_loss, int64_t rows, int64_t cols,
                                                      bool compute_grad) {
  return RunLinearCeOnline(hidden, weight, labels, ignore_index, label_smoothing, z_loss, rows,
                           cols, compute_grad, kMakeSteps);
}

}  // namespace qlorad::ops::detail
