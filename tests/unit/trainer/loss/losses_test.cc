// Distillation KL, GRPO, a LoRA'd lm_head and a tied embedding through the chunked lm_head + loss,
// each against the naive full-logits computation in fp64 with every formula written out.
#include "worker/trainer/loss/losses.h"

#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "worker/trainer/loss/chunked_loss.h"

namespace qlorad::trainer {
namespace {

// Odd sizes so no chunk size divides the token count evenly; chunk sizes 1, a prime, N, > N.
constexpr int64_t kTokens = 37, kHidden = 19, kVocab = 53, kRank = 3;
const std::vector<int64_t> kChunkSizes = {1, 7, kTokens, 1000};
constexpr double kLoraScale = 2.0;
const std::vector<int64_t> kIgnored = {0, 5, 6, 20, 36};

at::Generator Gen(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// fp64 values; each test casts them to the dtype under test, and the reference uses the cast
// values in fp64, so what differs is only the arithmetic of that dtype.
struct Head {
  at::Tensor hidden, weight, lora_a, lora_b;  // lora_* undefined without LoRA
  at::Tensor lora_input;                      // what A sees; undefined: hidden itself
};

Head MakeHead(bool lora, uint64_t seed = 7) {
  at::Generator gen = Gen(seed);
  Head h;
  h.hidden = at::randn({kTokens, kHidden}, gen, at::kDouble);
  h.weight = at::randn({kVocab, kHidden}, gen, at::kDouble) * 0.5;
  if (lora) {
    h.lora_a = at::randn({kRank, kHidden}, gen, at::kDouble) * 0.3;
    h.lora_b = at::randn({kVocab, kRank}, gen, at::kDouble) * 0.3;
  }
  return h;
}

// A LoRA head whose A sees a dropped copy of hidden, as LoRA dropout gives it: a fixed mask
// (about p of the entries zero), the rest scaled by 1 / (1 - p).
Head WithDroppedInput(Head h, double p = 0.3) {
  const at::Tensor keep = at::rand(h.hidden.sizes(), Gen(29), at::kDouble).ge(p);
  h.lora_input = h.hidden * keep.to(at::kDouble) / (1.0 - p);
  return h;
}

Head Cast(const Head& h, at::ScalarType t) {
  auto cast = [t](const at::Tensor& x) { return x.defined() ? x.to(t) : x; };
  return {cast(h.hidden), cast(h.weight), cast(h.lora_a), cast(h.lora_b), cast(h.lora_input)};
}

struct Trainable {
  bool weight = true;  // lora tensors are always trainable when present
};

// Leaves that require grad as the test asks: hidden always, the weight when trainable.
Head Leaves(const Head& h, Trainable tr) {
  Head l = h;
  l.hidden = h.hidden.detach().requires_grad_(true);
  l.weight = h.weight.detach().requires_grad_(tr.weight);
  if (h.lora_a.defined()) {
    l.lora_a = h.lora_a.detach().requires_grad_(true);
    l.lora_b = h.lora_b.detach().requires_grad_(true);
  }
  if (h.lora_input.defined()) l.lora_input = h.lora_input.detach().requires_grad_(true);
  return l;
}

using NaiveLoss = std::function<at::Tensor(const at::Tensor& logits64)>;

void ExpectClose(const at::Tensor& actual, const at::Tensor& expected, double tol,
                 const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what;
  ASSERT_TRUE(expected.defined()) << what;
  const double err = (actual.to(at::kDouble) - expected).abs().max().item<double>();
  const double scale = expected.abs().max().item<double>();
  EXPECT_LE(err, tol * std::max(scale, 1.0)) << what << " (max |expected| " << scale << ")";
}

// Runs ChunkedLinearLoss for every chunk size in `dtype` and compares value and gradients (hidden,
// weight when trainable, lora_a, lora_b and lora_input when present) with the naive fp64 loss on
// all logits.
void CheckAgainstNaive(const Head& fp64, at::ScalarType dtype, Trainable tr,
                       const ChunkTargets& targets, const ChunkLossFn& loss, const NaiveLoss& naive,
                       double tol) {
  const Head typed = Cast(fp64, dtype);
  const double grad_scale = 0.37;  // backward sees an upstream gradient that is not 1
  const Head ref = Leaves(Cast(typed, at::kDouble), tr);
  at::Tensor logits = ref.hidden.matmul(ref.weight.t());
  if (ref.lora_a.defined()) {
    const at::Tensor& x = ref.lora_input.defined() ? ref.lora_input : ref.hidden;
    logits = logits + kLoraScale * x.matmul(ref.lora_a.t()).matmul(ref.lora_b.t());
  }
  const at::Tensor expected = naive(logits);
  (expected * grad_scale).backward();
  for (int64_t rows : kChunkSizes) {
    SCOPED_TRACE("chunk_rows " + std::to_string(rows) + " dtype " +
                 std::string(c10::toString(dtype)));
    const Head ours = Leaves(typed, tr);
    LinearHead head = ours.lora_a.defined()
                          ? LinearHead(ours.weight, ours.lora_a, ours.lora_b, kLoraScale)
                          : LinearHead(ours.weight);
    head.lora_input = ours.lora_input;
    const at::Tensor got = ChunkedLinearLoss(ours.hidden, head, targets, loss, rows);
    EXPECT_EQ(got.scalar_type(), at::kDouble);
    const double want = expected.item<double>();
    EXPECT_NEAR(got.item<double>(), want, tol * std::max(std::abs(want), 1.0));
    (got * grad_scale).backward();
    ExpectClose(ours.hidden.grad(), ref.hidden.grad(), tol, "grad hidden");
    EXPECT_EQ(ours.hidden.grad().scalar_type(), dtype);
    if (tr.weight) {
      ExpectClose(ours.weight.grad(), ref.weight.grad(), tol, "grad weight");
      EXPECT_EQ(ours.weight.grad().scalar_type(), dtype);
    } else {
      EXPECT_FALSE(ours.weight.grad().defined());
    }
    if (ours.lora_a.defined()) {
      ExpectClose(ours.lora_a.grad(), ref.lora_a.grad(), tol, "grad lora_a");
      ExpectClose(ours.lora_b.grad(), ref.lora_b.grad(), tol, "grad lora_b");
    }
    if (ours.lora_input.defined()) {
      ExpectClose(ours.lora_input.grad(), ref.lora_input.grad(), tol, "grad lora_input");
      EXPECT_EQ(ours.lora_input.grad().scalar_type(), dtype);
    }
  }
}

// Tolerances tied to the precision of the logits' matmul: fp64 exact up to summation order, fp32
// and fp16 a few ulps of their mantissas (24 and 11 bits), bf16 a few of its 8 bits.
struct Precision {
  at::ScalarType dtype;
  double tol;
};
const std::vector<Precision> kPrecisions = {
    {at::kDouble, 1e-11}, {at::kFloat, 2e-5}, {at::kHalf, 5e-3}, {at::kBFloat16, 3e-2}};

// --- distillation ---------------------------------------------------------------------------

at::Tensor ReferenceLogits() {
  return at::randn({kTokens, kVocab}, Gen(11), at::kDouble) * 2.0;
}

at::Tensor TokenMask() {
  at::Tensor mask = at::ones({kTokens}, at::kDouble);
  for (int64_t i : kIgnored) mask[i] = 0.0;
  return mask;
}

// KL written from softmax and log, not log_softmax, per token, then summed with the mask.
at::Tensor NaiveKl(const at::Tensor& logits, const at::Tensor& reference, KlDirection dir, double t,
                   const at::Tensor& mask) {
  const at::Tensor p = at::softmax(logits / t, -1), q = at::softmax(reference / t, -1);
  const at::Tensor per_token = dir == KlDirection::kForward ? (q * (q.log() - p.log())).sum(-1)
                                                            : (p * (p.log() - q.log())).sum(-1);
  return t * t * (per_token * mask).sum();
}

TEST(LossesTest, ForwardAndReverseKlEqualNaiveInEveryPrecision) {
  const at::Tensor reference = ReferenceLogits();
  const at::Tensor mask = TokenMask();
  for (KlDirection dir : {KlDirection::kForward, KlDirection::kReverse}) {
    for (double t : {1.0, 2.5}) {
      SCOPED_TRACE(std::string(dir == KlDirection::kForward ? "forward" : "reverse") + " T " +
                   std::to_string(t));
      const ChunkLossFn loss = KlDivergenceChunkLoss({.direction = dir, .temperature = t});
      for (const Precision& p : kPrecisions) {
        // Reference logits stored in the model's dtype, as a teacher's forward would give them.
        const at::Tensor stored = reference.to(p.dtype);
        CheckAgainstNaive(
            MakeHead(false), p.dtype, {}, {stored, mask}, loss,
            [&](const at::Tensor& l) { return NaiveKl(l, stored.to(at::kDouble), dir, t, mask); },
            p.tol);
      }
    }
  }
}

TEST(LossesTest, KlWithoutMaskCountsEveryToken) {
  const at::Tensor reference = ReferenceLogits();
  CheckAgainstNaive(
      MakeHead(false), at::kDouble, {}, {reference}, KlDivergenceChunkLoss({}),
      [&](const at::Tensor& l) {
        return NaiveKl(l, reference, KlDirection::kForward, 1.0, at::ones({kTokens}, at::kDouble));
      },
      1e-11);
}

TEST(LossesTest, KlOfIdenticalLogitsIsZero) {
  const Head h = MakeHead(false);
  const at::Tensor logits = h.hidden.matmul(h.weight.t());
  for (KlDirection dir : {KlDirection::kForward, KlDirection::kReverse}) {
    const double kl = ChunkedLinearLoss(h.hidden, h.weight, {logits},
                                        KlDivergenceChunkLoss({.direction = dir}), 7)
                          .item<double>();
    EXPECT_NEAR(kl, 0.0, 1e-12);
  }
}

// --- GRPO -----------------------------------------------------------------------------------

struct GrpoBatch {
  at::Tensor tokens, advantages, old_logp, ref_logp, weights;
};

// Four "completions" of uneven length over the 37 tokens; a per-sequence advantage repeated on
// its tokens; old and reference log-probs near the current ones (some ratios inside the clip
// range, some outside, on both sides); weights 1 / completion length (GRPO's per-sequence mean).
GrpoBatch MakeGrpoBatch(const Head& h) {
  at::Generator gen = Gen(13);
  GrpoBatch b;
  b.tokens = at::randint(kVocab, {kTokens}, gen, at::kLong);
  for (int64_t i : kIgnored) b.tokens[i] = -100;
  const at::Tensor seq = at::tensor({0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                     2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3},
                                    at::kLong);
  const at::Tensor per_seq_advantage = at::tensor({1.3, -0.7, 0.4, -1.1}, at::kDouble);
  b.advantages = per_seq_advantage.index_select(0, seq).to(at::kFloat);
  const at::Tensor logp = at::log_softmax(h.hidden.matmul(h.weight.t()), -1)
                              .gather(1, b.tokens.clamp_min(0).unsqueeze(1))
                              .squeeze(1);
  // log-ratios of +-0.05 (inside the clip range) and +-0.6 (outside, either side): far from the
  // clip edges (log 0.8, log 1.28), where bf16 rounding of the logits (~0.02 in logp) could move a
  // token across an edge, a jump in the gradient that no tolerance covers.
  const at::Tensor log_ratio = at::tensor({0.05, -0.05, 0.6, -0.6}, at::kDouble)
                                   .index_select(0, at::randint(4, {kTokens}, gen, at::kLong));
  b.old_logp = (logp - log_ratio).to(at::kFloat);
  b.ref_logp = (logp + at::randn({kTokens}, gen, at::kDouble) * 0.3).to(at::kFloat);
  // An ignored token's inputs are garbage and must not matter.
  for (int64_t i : kIgnored) {
    b.old_logp[i] = -std::numeric_limits<float>::infinity();
    b.ref_logp[i] = std::numeric_limits<float>::quiet_NaN();
  }
  const at::Tensor valid = b.tokens.ne(-100).to(at::kDouble);
  const at::Tensor lengths = at::zeros({4}, at::kDouble).index_add(0, seq, valid);
  b.weights = (1.0 / lengths).index_select(0, seq).to(at::kFloat);
  return b;
}

// The objective token by token, in plain loops over fp64 scalars.
at::Tensor NaiveGrpo(const at::Tensor& logits, const GrpoBatch& b, const GrpoOptions& o,
                     bool weighted) {
  const at::Tensor logp_all = at::log(at::softmax(logits, -1));
  at::Tensor total = at::zeros({}, at::kDouble);
  for (int64_t t = 0; t < kTokens; ++t) {
    const int64_t token = b.tokens[t].item<int64_t>();
    if (token == o.ignore_index) continue;
    const at::Tensor logp = logp_all[t][token];
    const double a = b.advantages[t].item<double>();
    const at::Tensor ratio = at::exp(logp - b.old_logp[t].item<double>());
    const at::Tensor unclipped = ratio * a;
    const at::Tensor clipped = ratio.clamp(1 - o.clip_low, 1 + o.clip_high) * a;
    at::Tensor term = -at::minimum(unclipped, clipped);
    if (o.beta != 0) {
      const at::Tensor log_ref_over_pi = b.ref_logp[t].item<double>() - logp;
      term = term + o.beta * (at::exp(log_ref_over_pi) - log_ref_over_pi - 1);
    }
    total = total + (weighted ? b.weights[t].item<double>() : 1.0) * term;
  }
  return total;
}

TEST(LossesTest, GrpoEqualsNaiveInEveryPrecision) {
  const Head h = MakeHead(false);
  const GrpoBatch b = MakeGrpoBatch(h);
  GrpoOptions o;
  o.clip_high = 0.28;
  for (const Precision& p : kPrecisions) {
    CheckAgainstNaive(
        h, p.dtype, {}, {b.tokens, b.advantages, b.old_logp, b.ref_logp, b.weights},
        GrpoChunkLoss(o), [&](const at::Tensor& l) { return NaiveGrpo(l, b, o, true); }, p.tol);
  }
}

TEST(LossesTest, GrpoWithoutKlOrWeightsAndWithAFrozenHead) {
  const Head h = MakeHead(false);
  const GrpoBatch b = MakeGrpoBatch(h);
  GrpoOptions o;
  o.beta = 0.0;
  CheckAgainstNaive(
      h, at::kDouble, {.weight = false}, {b.tokens, b.advantages, b.old_logp, b.ref_logp},
      GrpoChunkLoss(o), [&](const at::Tensor& l) { return NaiveGrpo(l, b, o, false); }, 1e-11);
}

TEST(LossesTest, GrpoOnPolicyRatioIsOneAndItsGradientIsThePolicyGradient) {
  // old_logp = the current log-probs: loss = -sum A_t (ratio 1 inside any clip range), and
  // d/dlogits = -A_t * (onehot - softmax), i.e. REINFORCE with advantages.
  const Head h = MakeHead(false);
  GrpoBatch b = MakeGrpoBatch(h);
  b.old_logp = at::log_softmax(h.hidden.matmul(h.weight.t()), -1)
                   .gather(1, b.tokens.clamp_min(0).unsqueeze(1))
                   .squeeze(1);
  GrpoOptions o;
  o.beta = 0.0;
  const at::Tensor hidden = h.hidden.detach().requires_grad_(true);
  const at::Tensor got = ChunkedLinearLoss(
      hidden, h.weight, {b.tokens, b.advantages, b.old_logp, b.ref_logp}, GrpoChunkLoss(o), 7);
  const at::Tensor valid = b.tokens.ne(-100);
  EXPECT_NEAR(got.item<double>(), -(b.advantages.to(at::kDouble) * valid).sum().item<double>(),
              1e-12);
  got.backward();
  const at::Tensor p = at::softmax(h.hidden.matmul(h.weight.t()), -1);
  const at::Tensor onehot = at::one_hot(b.tokens.clamp_min(0), kVocab).to(at::kDouble);
  const at::Tensor grad_logits =
      (-(b.advantages.to(at::kDouble) * valid).unsqueeze(1)) * (onehot - p);
  ExpectClose(hidden.grad(), grad_logits.matmul(h.weight), 1e-12, "grad hidden");
}

// --- lm_head variants -------------------------------------------------------------------------

at::Tensor Labels() {
  at::Tensor labels = at::randint(kVocab, {kTokens}, Gen(5), at::kLong);
  for (int64_t i : kIgnored) labels[i] = -100;
  return labels;
}

at::Tensor NaiveCrossEntropy(const at::Tensor& logits, const at::Tensor& labels) {
  const at::Tensor valid = labels.ne(-100);
  const at::Tensor logp = at::log(at::softmax(logits, -1));
  return -(logp.gather(1, labels.clamp_min(0).unsqueeze(1)).squeeze(1) * valid).sum();
}

TEST(LossesTest, LoraHeadGradientsReachAAndBWithTheBaseFrozen) {
  const at::Tensor labels = Labels();
  for (const Precision& p : kPrecisions) {
    CheckAgainstNaive(
        MakeHead(true), p.dtype, {.weight = false}, {labels}, CrossEntropyChunkLoss({}),
        [&](const at::Tensor& l) { return NaiveCrossEntropy(l, labels); }, p.tol);
  }
  // Distillation through a LoRA'd head, with the base weight trainable too.
  const at::Tensor reference = ReferenceLogits();
  CheckAgainstNaive(
      MakeHead(true), at::kDouble, {}, {reference}, KlDivergenceChunkLoss({}),
      [&](const at::Tensor& l) {
        return NaiveKl(l, reference, KlDirection::kForward, 1.0, at::ones({kTokens}, at::kDouble));
      },
      1e-11);
}

// LoRA dropout on the head: A sees dropout(hidden), W sees hidden; hidden gets the W path's
// gradient and lora_input the A path's (the dropout's backward is autograd's, outside).
TEST(LossesTest, LoraHeadWithDroppedInputEqualsNaiveForEveryLoss) {
  const at::Tensor labels = Labels();
  const Head dropped = WithDroppedInput(MakeHead(true));
  for (const Precision& p : kPrecisions) {
    CheckAgainstNaive(
        dropped, p.dtype, {.weight = false}, {labels}, CrossEntropyChunkLoss({}),
        [&](const at::Tensor& l) { return NaiveCrossEntropy(l, labels); }, p.tol);
  }
  // The base weight trainable too; distillation and GRPO through the same head.
  CheckAgainstNaive(
      dropped, at::kDouble, {}, {labels}, CrossEntropyChunkLoss({}),
      [&](const at::Tensor& l) { return NaiveCrossEntropy(l, labels); }, 1e-11);
  const at::Tensor reference = ReferenceLogits();
  CheckAgainstNaive(
      dropped, at::kDouble, {}, {reference, TokenMask()}, KlDivergenceChunkLoss({}),
      [&](const at::Tensor& l) {
        return NaiveKl(l, reference, KlDirection::kForward, 1.0, TokenMask());
      },
      1e-11);
  const GrpoBatch b = MakeGrpoBatch(dropped);
  const GrpoOptions o;
  CheckAgainstNaive(
      dropped, at::kDouble, {}, {b.tokens, b.advantages, b.old_logp, b.ref_logp, b.weights},
      GrpoChunkLoss(o), [&](const at::Tensor& l) { return NaiveGrpo(l, b, o, true); }, 1e-11);
}

// Through at::dropout itself: hidden's gradient is the W path's plus the A path's brought back
// through the mask, as autograd on the full logits gives it; the naive path takes the same input.
TEST(LossesTest, LoraHeadDropoutGradientReachesHiddenThroughTheMask) {
  const Head h = MakeHead(true);
  const at::Tensor labels = Labels();
  const at::Tensor hidden = h.hidden.detach().requires_grad_(true);
  torch::manual_seed(31);
  LinearHead head(h.weight, h.lora_a, h.lora_b, kLoraScale);
  head.lora_input = at::dropout(hidden, 0.25, /*train=*/true);
  const at::Tensor keep = head.lora_input.detach().ne(0).to(at::kDouble);
  ASSERT_GT(keep.sum().item<double>(), 0.5 * keep.numel());
  ASSERT_LT(keep.sum().item<double>(), keep.numel());
  ChunkedCrossEntropy(hidden, head, labels, {}, 7, LossPath::kGeneric).sum.backward();

  const at::Tensor ref = h.hidden.detach().requires_grad_(true);
  const at::Tensor logits =
      ref.matmul(h.weight.t()) +
      kLoraScale * (ref * keep / 0.75).matmul(h.lora_a.t()).matmul(h.lora_b.t());
  NaiveCrossEntropy(logits, labels).backward();
  ExpectClose(hidden.grad(), ref.grad(), 1e-11, "grad hidden");
  const double naive =
      ChunkedCrossEntropy(h.hidden, head, labels, {}, 7, LossPath::kNaive).sum.item<double>();
  EXPECT_NEAR(naive, NaiveCrossEntropy(logits, labels).item<double>(), 1e-11 * std::abs(naive));
}

TEST(LossesTest, LoraHeadTakesTheGenericPathAndMatchesIt) {
  const Head h = MakeHead(true);
  const at::Tensor labels = Labels();
  const LinearHead head(h.weight, h.lora_a, h.lora_b, kLoraScale);
  const double auto_path = ChunkedCrossEntropy(h.hidden, head, labels, {}, 7).sum.item<double>();
  const double generic =
      ChunkedCrossEntropy(h.hidden, head, labels, {}, 7, LossPath::kGeneric).sum.item<double>();
  EXPECT_EQ(auto_path, generic);
  EXPECT_THROW(ChunkedCrossEntropy(h.hidden, head, labels, {}, 7, LossPath::kFused), c10::Error);
  EXPECT_THROW(ChunkedLinearLoss(h.hidden, LinearHead(h.weight, h.lora_a.t(), h.lora_b, 1.0),
                                 {labels}, CrossEntropyChunkLoss({}), 7),
               c10::Error);
  // A dropped input takes the generic path too; it must match hidden and needs a LoRA.
  LinearHead dropped = head;
  dropped.lora_input = WithDroppedInput(h).lora_input;
  EXPECT_EQ(
      ChunkedCrossEntropy(h.hidden, dropped, labels, {}, 7).sum.item<double>(),
      ChunkedCrossEntropy(h.hidden, dropped, labels, {}, 7, LossPath::kGeneric).sum.item<double>());
  EXPECT_THROW(ChunkedCrossEntropy(h.hidden, dropped, labels, {}, 7, LossPath::kFused), c10::Error);
  dropped.lora_input = dropped.lora_input.narrow(0, 0, kTokens - 1);
  EXPECT_THROW(ChunkedCrossEntropy(h.hidden, dropped, labels, {}, 7), c10::Error);
  LinearHead no_lora(h.weight);
  no_lora.lora_input = h.hidden;
  EXPECT_THROW(ChunkedCrossEntropy(h.hidden, no_lora, labels, {}, 7), c10::Error);
}

// A tied lm_head is the embedding table: its gradient is the sum of the lookup's and the head's.
TEST(LossesTest, TiedEmbeddingGetsBothGradients) {
  const at::Tensor labels = Labels();
  const at::Tensor ids = at::randint(kVocab, {kTokens}, Gen(17), at::kLong);
  const at::Tensor table64 = at::randn({kVocab, kHidden}, Gen(19), at::kDouble) * 0.5;
  const at::Tensor mix = at::randn({kHidden, kHidden}, Gen(23), at::kDouble) * 0.3;
  auto run = [&](const at::Tensor& table, bool naive, LossPath path) {
    const at::Tensor hidden = at::embedding(table, ids).matmul(mix.to(table.scalar_type()));
    if (naive) return NaiveCrossEntropy(hidden.matmul(table.t()), labels);
    return ChunkedCrossEntropy(hidden, table, labels, {}, 7, path).sum;
  };
  const at::Tensor ref_table = table64.detach().requires_grad_(true);
  run(ref_table, true, LossPath::kGeneric).backward();
  for (const Precision& p : {kPrecisions[0], kPrecisions[1]}) {
    for (LossPath path : {LossPath::kGeneric, LossPath::kFused}) {
      SCOPED_TRACE(std::string(c10::toString(p.dtype)) +
                   (path == LossPath::kFused ? " fused" : " generic"));
      const at::Tensor table = table64.to(p.dtype).detach().requires_grad_(true);
      run(table, false, path).backward();
      ExpectClose(table.grad(), ref_table.grad(), p.tol, "grad of the tied table");
    }
  }
}

TEST(LossesTest, BadTargetsAreClearErrors) {
  const Head h = MakeHead(false);
  EXPECT_THROW(ChunkedLinearLoss(h.hidden, h.weight, {at::zeros({kTokens, kVocab + 1})},
                                 KlDivergenceChunkLoss({}), 7),
               c10::Error);
  EXPECT_THROW(KlDivergenceChunkLoss({.temperature = 0.0}), c10::Error);
  EXPECT_THROW(ChunkedLinearLoss(h.hidden, h.weight, {Labels()}, GrpoChunkLoss({}), 7), c10::Error);
  EXPECT_THROW(
      ChunkedLinearLoss(h.hidden, h.weight, {at::zeros({3})}, CrossEntropyChunkLoss({}), 7),
      c10::Error);
}

}  // namespace
}  // namespace qlorad::trainer
