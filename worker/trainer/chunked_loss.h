// Memory-efficient "hidden states -> lm_head -> loss": the logits of all tokens are never held at
// once. Tokens are cut into chunks of rows; forward computes each chunk's logits, upcasts them to
// fp32, applies a per-chunk loss and frees them; backward recomputes each chunk and takes its
// gradient from autograd on that chunk, so any loss written as ordinary LibTorch code works
// without a hand-written derivative.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>

namespace qlorad::trainer {

// A chunk's loss: fp32 logits [rows, vocab] and that chunk's rows of the targets -> a scalar SUM
// over the chunk's tokens (never a mean: chunks are summed, the caller divides once per step).
// `targets` is whatever the loss needs, sliced along dim 0 (labels, reference logits, ...).
using ChunkLossFn = std::function<at::Tensor(const at::Tensor& logits, const at::Tensor& targets)>;

// Rows per chunk when train.loss_chunk_size is auto: a chunk's fp32 logits stay under this.
inline constexpr int64_t kDefaultLossChunkBudgetBytes = int64_t{256} << 20;

// `requested` > 0 is used as given; 0 (auto) picks the most rows whose fp32 logits fit `budget`.
int64_t ResolveLossChunkRows(int64_t requested, int64_t vocab,
                             int64_t budget_bytes = kDefaultLossChunkBudgetBytes);

// Sum over chunks of loss(fp32(hidden_chunk @ weight^T), targets_chunk), as an fp64 scalar.
// hidden [N, d] (requires grad or not), weight [V, d] (its gradient is computed only when it
// requires grad), targets [N, ...]. Differentiable once with respect to hidden and weight.
at::Tensor ChunkedLinearLoss(const at::Tensor& hidden, const at::Tensor& weight,
                             const at::Tensor& targets, ChunkLossFn loss, int64_t chunk_rows);

struct CrossEntropyOptions {
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;  // torch/HF definition: (1-e)*nll + e*mean over classes of -log p
  double z_loss = 0.0;           // adds z_loss * logsumexp(logits)^2 per valid token (PaLM)
};

// The per-chunk cross-entropy (sum over tokens whose label is not ignore_index).
ChunkLossFn CrossEntropyChunkLoss(const CrossEntropyOptions& options);

struct LinearCrossEntropy {
  at::Tensor sum;            // fp64 scalar, differentiable: divide by the step's valid tokens
  int64_t valid_tokens = 0;  // labels != ignore_index in this call
};

// Chunked cross-entropy of labels [N] (int64) given hidden [N, d] and lm_head weight [V, d].
LinearCrossEntropy ChunkedCrossEntropy(const at::Tensor& hidden, const at::Tensor& weight,
                                       const at::Tensor& labels, const CrossEntropyOptions& options,
                                       int64_t chunk_rows);

}  // namespace qlorad::trainer
