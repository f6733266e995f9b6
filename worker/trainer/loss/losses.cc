#include "worker/trainer/loss/losses.h"

namespace qlorad::trainer {

ChunkLossFn KlDivergenceChunkLoss(const KlOptions& options) {
  TORCH_CHECK(options.temperature > 0, "KL loss: temperature must be positive, got ",
              options.temperature);
  return [options](const at::Tensor& logits, const ChunkTargets& targets) {
    TORCH_CHECK(targets.size() == 1 || targets.size() == 2,
                "KL loss: targets are {reference_logits} or {reference_logits, mask}");
    const at::Tensor& reference = targets[0];
    TORCH_CHECK(reference.sizes() == logits.sizes(), "KL loss: reference logits ",
                reference.sizes(), " differ from the logits ", logits.sizes());
    const double t = options.temperature;
    const at::Tensor logp = at::log_softmax(logits / t, -1);
    const at::Tensor logq = at::log_softmax(reference.to(logits.scalar_type()) / t, -1);
    at::Tensor per_token = options.direction == KlDirection::kForward
                               ? (logq.exp() * (logq - logp)).sum(-1)
                               : (logp.exp() * (logp - logq)).sum(-1);
    if (targets.size() == 2) per_token = per_token * targets[1].to(logits.scalar_type());
    return per_token.sum() * (t * t);
  };
}

ChunkLossFn GrpoChunkLoss(const GrpoOptions& options) {
  return [options](const at::Tensor& logits, const ChunkTargets& targets) {
    TORCH_CHECK(targets.size() == 4 || targets.size() == 5,
                "GRPO loss: targets are {tokens, advantages, old_logp, ref_logp[, weights]}");
    const at::Tensor& tokens = targets[0];
    const at::ScalarType f = logits.scalar_type();
    const at::Tensor valid = tokens.ne(options.ignore_index);
    const at::Tensor safe_tokens = at::where(valid, tokens, at::zeros_like(tokens));
    const at::Tensor logp =
        at::log_softmax(logits, -1).gather(1, safe_tokens.unsqueeze(1)).squeeze(1);
    // An ignored token's inputs may be anything (inf, NaN): zero them before they meet the graph,
    // where even a zero upstream gradient times an infinite local one would give NaN.
    const auto masked = [&](const at::Tensor& t) {
      return at::where(valid, t.to(f), at::zeros({}, logits.options()));
    };
    const at::Tensor advantages = masked(targets[1]);
    const at::Tensor ratio = at::exp(logp - masked(targets[2]));
    const at::Tensor clipped = ratio.clamp(1.0 - options.clip_low, 1.0 + options.clip_high);
    at::Tensor per_token = -at::minimum(ratio * advantages, clipped * advantages);
    if (options.beta != 0.0) {
      const at::Tensor diff = masked(targets[3]) - logp;
      per_token = per_token + options.beta * (diff.exp() - diff - 1.0);
    }
    at::Tensor weights = valid.to(f);
    if (targets.size() == 5) weights = weights * masked(targets[4]);
    return (per_token * weights).sum();
  };
}

}  // namespace qlorad::trainer
