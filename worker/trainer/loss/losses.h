// Per-chunk losses beyond cross-entropy for ChunkedLinearLoss (chunked_loss.h). Each is ordinary
// LibTorch code on a chunk's fp32 logits [rows, V]; its gradient comes from autograd on the chunk.
// Each returns a SUM over the chunk's tokens (weighted by the mask where there is one): the caller
// divides once per step by whatever normalizer it wants (tokens, sequences, a constant).
#pragma once

#include "worker/trainer/loss/chunked_loss.h"

namespace qlorad::trainer {

// Distillation to a teacher's logits. With q = softmax(reference / T), p = softmax(logits / T):
//   kForward:  T^2 * sum_v q_v (log q_v - log p_v)   KL(q || p), mean-seeking (Hinton et al.)
//   kReverse:  T^2 * sum_v p_v (log p_v - log q_v)   KL(p || q), mode-seeking (MiniLLM)
// The T^2 keeps gradient magnitudes comparable across temperatures (Hinton et al. 2015).
// Targets: {reference_logits [N, V] (any float dtype)} or {reference_logits, mask [N]}, where the
// mask (bool or float) multiplies each token's KL: 0 drops a token (prompt, padding).
enum class KlDirection { kForward, kReverse };

struct KlOptions {
  KlDirection direction = KlDirection::kForward;
  double temperature = 1.0;
};

ChunkLossFn KlDivergenceChunkLoss(const KlOptions& options);

// GRPO's objective per completion token t (DeepSeekMath; the clipped surrogate of PPO):
//   logp_t  = log softmax(logits_t)[token_t]
//   r_t     = exp(logp_t - old_logp_t)
//   pg_t    = -min(r_t * A_t, clip(r_t, 1 - clip_low, 1 + clip_high) * A_t)
//   kl_t    = exp(ref_logp_t - logp_t) - (ref_logp_t - logp_t) - 1     (k3: unbiased, >= 0)
//   loss    = sum_t w_t * (pg_t + beta * kl_t)      over tokens with token_t != ignore_index
// Targets, each [N] along the tokens: {tokens (int64; ignore_index marks prompt and padding),
// advantages A (fp32; a per-sequence advantage repeated on each of its tokens), old_logp (the
// sampling policy's log-probs; equal to the current ones on the first step of a batch, which makes
// r_t = 1 with the gradient of logp), ref_logp (the reference policy's; unused when beta is 0)}
// and optionally weights w (fp32; e.g. 1 / completion length for GRPO's per-sequence mean; 1 when
// absent).
struct GrpoOptions {
  double clip_low = 0.2;
  double clip_high = 0.2;  // DAPO raises it ("clip-higher"); GRPO uses clip_low
  double beta = 0.04;      // weight of the KL to the reference policy
  int64_t ignore_index = -100;
};

ChunkLossFn GrpoChunkLoss(const GrpoOptions& options);

}  // namespace qlorad::trainer
