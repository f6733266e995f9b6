// qlorad::linear_ce_online: linear + cross-entropy for a frozen lm_head that never holds a
// [rows, V] logits buffer. Per chunk of rows the vocabulary is walked in tiles of columns with an
// online softmax whose weighted sum of W's rows accumulates the gradient of hidden (the algorithm:
// kernels/ce_online.h). Memory beyond the [N, d] gradient: one [rows, cols] tile in the activation
// dtype and one [rows, d] fp32 accumulator. Compute: the two matmuls of Liger-style chunking (the
// logits, then their gradient times W), nothing recomputed.
//
// One loop for every device (ce_online_steps.h); each device registers the op with its steps:
// CUDA kernels + cuBLAS (ce_online_ops_cuda.cc), and the fp64-arithmetic CPU reference
// (ce_online_ops_cpu.cc) that CI tests. Meta gives shapes only.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

#include "kernels/torch/ce_ops.h"

namespace qlorad::ops {

struct OnlineCeTiling {
  int64_t rows = 0;  // tokens per chunk
  int64_t cols = 0;  // vocabulary entries per tile
};

// Sizes when the caller leaves them to the op. The scratch, [rows, cols] in the activation dtype
// plus [rows, d] fp32, is kept within a fifth of the [N, d] gradient that any linear cross-entropy
// returns (so the op's peak stays within ~1.2x of that floor), but never below what a tile of
// 2048 x min(16384, V) needs (80 MiB at d = 2048): smaller tiles left the matmuls short of full
// rate, the one that accumulates [rows, d] most, and cost launches (a 1B step's trace spent 18 ms
// in 352 tiles of 512 rows: bench/results/2026-12-07-h100-316de9d-trace-ckpt-off.txt; the loss
// alone: bench/results/2026-12-07-h100-1bfe21a-gpu_tests.txt). Within that: 16384 columns if 2048
// rows of them fit, else 8192 if 512 rows of them fit, and rows doubled while they fit, up to
// 4096. With both sizes automatic, the op first works with a larger tile (scratch up to half the
// gradient, rows up to 4096) whose scratch lives in the gradient's last rows, unwritten until the
// end, on the rows ahead of them; the peak stays that of the tile above.
OnlineCeTiling OnlineCeTilingFor(int64_t tokens, int64_t dim, int64_t vocab, int64_t elem_bytes);

// Per-row losses [N] (fp32; fp64 for fp64 inputs; 0 where ignored, NaN for a label outside
// [0, V)) and, if compute_grad, d(sum of losses)/d(hidden) [N, d] in hidden's dtype (else an
// empty tensor). hidden [N, d], weight [V, d]: same dtype (fp32, fp16, bf16; fp64 on CPU) and
// device; labels int64 [N]. rows, cols: 0 for OnlineCeTilingFor's, else the sizes to use.
std::tuple<at::Tensor, at::Tensor> LinearCrossEntropyOnline(
    const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
    const CrossEntropyKernelOptions& options, int64_t rows = 0, int64_t cols = 0,
    bool compute_grad = true);

namespace detail {
// Validation of linear_ce_online's arguments ("linear_ce_online: ..." messages).
void CheckOnlineInputs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                       int64_t rows, int64_t cols);
}  // namespace detail

}  // namespace qlorad::ops
