// Memory-efficient "hidden states -> lm_head -> loss": the logits of all tokens are never held at
// once. Tokens are cut into chunks of rows; forward computes each chunk's logits, upcasts them to
// fp32, applies a per-chunk loss and frees them; backward recomputes each chunk and takes its
// gradient from autograd on that chunk, so any loss written as ordinary LibTorch code works
// without a hand-written derivative (the generic path). Plain cross-entropy on CUDA has a fast
// path instead: a fused kernel writes loss and gradient in one sweep over each chunk's logits
// (kernels/ce_loss.h), and the lm_head's gradients come from two matmuls per chunk.
// The losses beyond cross-entropy (distillation KL, GRPO) live in losses.h.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace qlorad::trainer {

// Per-token tensors a loss needs (labels, reference logits, masks, advantages, ...), each with the
// tokens along dim 0; every chunk sees the same rows of each.
using ChunkTargets = std::vector<at::Tensor>;

// A chunk's loss: fp32 logits [rows, vocab] and that chunk's rows of the targets -> a scalar SUM
// over the chunk's tokens (never a mean: chunks are summed, the caller divides once per step).
using ChunkLossFn =
    std::function<at::Tensor(const at::Tensor& logits, const ChunkTargets& targets)>;

// The lm_head: logits = hidden @ weight^T [+ lora_scale * (lora_input @ lora_a^T) @ lora_b^T].
// weight [V, d] is the lm_head or, tied, the embedding table itself (its gradient then adds to
// the embedding's). With LoRA (lora_a [r, d], lora_b [V, r] defined) weight is usually frozen
// and the gradients flow to lora_a and lora_b. Each tensor gets a gradient only if it requires one.
// lora_input is what the adapter sees, PEFT's dropout(hidden) (y = h W^T + s * B(A(dropout(h))));
// undefined, the adapter sees hidden itself and nothing beyond it is held or computed. Defined
// ([N, d], hidden's dtype), it gets the gradient of the A path and hidden that of the W path
// (autograd carries the former back through the dropout), and it costs memory: the one [N, d]
// tensor, kept until backward (plus the [N, d] mask that autograd keeps for the dropout itself).
struct LinearHead {
  LinearHead(at::Tensor w) : weight(std::move(w)) {}  // NOLINT: a bare weight is a head
  LinearHead(at::Tensor w, at::Tensor a, at::Tensor b, double scale)
      : weight(std::move(w)), lora_a(std::move(a)), lora_b(std::move(b)), lora_scale(scale) {}
  at::Tensor weight;
  at::Tensor lora_a, lora_b;  // undefined without LoRA
  double lora_scale = 0.0;
  at::Tensor lora_input;  // undefined: hidden itself (no dropout)
  bool has_lora() const { return lora_a.defined(); }
  bool has_lora_input() const { return lora_input.defined(); }
};

// Rows per chunk when train.loss_chunk_size is auto: a chunk's fp32 logits stay under this.
inline constexpr int64_t kDefaultLossChunkBudgetBytes = int64_t{256} << 20;

// `requested` > 0 is used as given; 0 (auto) picks the most rows whose fp32 logits fit `budget`.
int64_t ResolveLossChunkRows(int64_t requested, int64_t vocab,
                             int64_t budget_bytes = kDefaultLossChunkBudgetBytes);

// Rows per chunk of the fused path (which holds one [rows, V] buffer in the activation dtype and,
// at all times, the [N, d] gradient of hidden). Its peak is N*d + rows*V elements, against
// N*d + O(N) for a kernel that never stores logits (Cut Cross-Entropy), so rows is kept to:
//  - at most tokens * hidden_dim / 4 / vocab: the chunk adds at most a quarter to the floor;
//  - but at least kFusedLossMinChunkRows: the two matmuls of a chunk read all of the [V, d]
//    weight, so below ~256 rows (the H100's bf16 flop-per-byte ridge is ~300) they are bound by
//    that read and the step gets slower in proportion to the number of chunks;
//  - and never more than the generic path's budget (ResolveLossChunkRows(0, vocab)).
// At V = 128256, d = 2048..4096, N = 8K..32K this gives 256..261 rows (62.6..63.9 MiB of bf16).
inline constexpr int64_t kFusedLossMinChunkRows = 256;
int64_t FusedLossChunkRows(int64_t tokens, int64_t hidden_dim, int64_t vocab);

// Sum over chunks of loss(fp32(head(hidden_chunk)), targets_chunk), as an fp64 scalar.
// hidden [N, d] (requires grad or not), targets each [N, ...]. Differentiable once with respect
// to hidden and the head's tensors.
at::Tensor ChunkedLinearLoss(const at::Tensor& hidden, const LinearHead& head, ChunkTargets targets,
                             ChunkLossFn loss, int64_t chunk_rows);

struct CrossEntropyOptions {
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;  // torch/HF definition: (1-e)*nll + e*mean over classes of -log p
  double z_loss = 0.0;           // adds z_loss * logsumexp(logits)^2 per valid token (PaLM)
};

// The per-chunk cross-entropy (sum over tokens whose label, targets[0], is not ignore_index).
ChunkLossFn CrossEntropyChunkLoss(const CrossEntropyOptions& options);

struct LinearCrossEntropy {
  at::Tensor sum;  // fp64 scalar, differentiable: divide by the step's valid tokens
  at::Tensor labels;
  int64_t ignore_index = -100;
  // labels != ignore_index in this call, an int64 scalar on the labels' device, counted only when
  // asked: the trainer divides by counts from its host-side batches instead, and reading a device
  // count back (.item()) would make the host wait for the device in every micro-batch.
  at::Tensor valid_tokens() const { return labels.ne(ignore_index).sum(); }
};

// kAuto: the fused kernels when the tensors are on CUDA and the head has no LoRA, else generic.
// kFused elsewhere runs the same drivers with the kernels' CPU references (what CI tests).
// kNaive: no chunking at all, every logit at once (at::linear, fp32 upcast, at::cross_entropy, as
// transformers computes it): the reference that tests and benchmarks compare the others with.
enum class LossPath { kAuto, kGeneric, kFused, kNaive };

// Makes kAuto resolve to `path` while it lives, so a whole training run (whose loss call asks for
// kAuto) can be repeated on the naive reference path. For tests; not thread-safe, not nestable.
class ScopedAutoLossPath {
 public:
  explicit ScopedAutoLossPath(LossPath path);
  ~ScopedAutoLossPath();
  ScopedAutoLossPath(const ScopedAutoLossPath&) = delete;
  ScopedAutoLossPath& operator=(const ScopedAutoLossPath&) = delete;
};

// Chunked cross-entropy of labels [N] (int64) given hidden [N, d] and the lm_head. chunk_rows 0
// (train.loss_chunk_size auto) lets each path size its chunks: the generic path
// ResolveLossChunkRows(0, V), the fused path with a trainable W FusedLossChunkRows(N, d, V), with a
// frozen W the online kernel's OnlineCeTilingFor (kernels/torch/ce_online_ops.h). A positive
// chunk_rows is the generic path's size and an upper bound on the fused path's, which changes
// memory and speed only, never the result beyond rounding.
LinearCrossEntropy ChunkedCrossEntropy(const at::Tensor& hidden, const LinearHead& head,
                                       const at::Tensor& labels, const CrossEntropyOptions& options,
                                       int64_t chunk_rows, LossPath path = LossPath::kAuto);

}  // namespace qlorad::trainer
