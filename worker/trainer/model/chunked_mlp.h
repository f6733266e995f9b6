// The SwiGLU MLP, down(silu(x G^T) * (x U^T)), as one autograd node that keeps only its input x:
// backward computes the block again from x in chunks of rows (gate|up, SwiGLU, down's backward,
// SwiGLU's backward, gate|up's backward), so no [tokens, intermediate] tensor is ever kept, and
// while one chunk is in flight the block holds a chunk's worth of them.
//
// Where it pays:
//   - activation recompute (graph_only_forward.h): the recomputed layer's MLP output is never
//     read, so forward computes nothing at all, and backward computes gate|up once, as the
//     recompute would have: the same GEMMs as the plain path, and the recompute's graph holds x
//     instead of gate|up (the layer's widest activation) and its gradient.
//   - long context: the chunks bound the MLP's memory whatever the sequence length.
// Numerics: each chunk's rows are those of the whole block (the same GEMMs on fewer rows); the
// adapters' gradients are summed over chunks, so they agree with the unchunked block to the
// rounding of that sum.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "worker/trainer/model/fused_projection.h"

namespace qlorad::trainer {

// Rows per chunk over `tokens` rows: common/memory_estimate.h's MlpChunkRows for `dtype`, the rule
// the memory estimate counts (chunks of at most 4096 rows and 256 MiB of gate|up, shared evenly in
// multiples of 128 rows).
int64_t MlpChunkRows(int64_t intermediate, at::ScalarType dtype, int64_t tokens);

// x [.., hidden] -> down(silu(gate(x)) * up(x)) [.., hidden], where gate_up (the gate and up
// layers side by side) and down Apply to x and hold no biases; both must outlive the graph.
// output_unused: the caller reads only the graph, so forward computes nothing and the output's
// values are unspecified. chunk_rows <= 0: MlpChunkRows. kept_gate_up: gate_up's output for x
// [.., 2 x intermediate], as a checkpointed forward computed and kept it (recompute_keep.h);
// backward reads its rows instead of running the gate|up GEMM again (the adapters' x A^T, which
// their gradients need, it still computes: r columns a projection).
at::Tensor ChunkedMlp(const at::Tensor& x, const FusedProjection& gate_up,
                      const FusedProjection& down, bool output_unused, int64_t chunk_rows = 0,
                      const at::Tensor& kept_gate_up = {});

}  // namespace qlorad::trainer
