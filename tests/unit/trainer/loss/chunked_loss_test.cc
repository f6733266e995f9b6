// The chunked lm_head + loss against the naive full-logits computation in fp64, and the trainer's
// loss curve with and without chunking.
#include "worker/trainer/loss/chunked_loss.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#ifdef QLORAD_HAVE_NF4_OPS
#include "kernels/torch/ce_online_ops.h"
#include "kernels/torch/ce_ops.h"
#endif
#include "tests/unit/trainer/test_util.h"
#include "tests/unit/trainer/tiny_run.h"

namespace qlorad::trainer {
namespace {

using testing::TempDir;

// Odd sizes so no chunk size divides the token count evenly.
constexpr int64_t kTokens = 37, kHidden = 19, kVocab = 53;

struct Inputs {
  at::Tensor hidden, weight, labels;
};

Inputs MakeInputs(at::ScalarType dtype, uint64_t seed = 7) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  Inputs in;
  in.hidden = at::randn({kTokens, kHidden}, gen, at::kDouble).to(dtype);
  in.weight = (at::randn({kVocab, kHidden}, gen, at::kDouble) * 0.5).to(dtype);
  in.labels = at::randint(kVocab, {kTokens}, gen, at::kLong);
  for (int64_t i : {0, 5, 6, 20, 36}) in.labels[i] = -100;
  return in;
}

// Naive reference: every logit at once, in fp64, each formula written out.
struct Reference {
  double loss;
  at::Tensor grad_hidden, grad_weight;
  at::Tensor losses;  // per token, 0 where ignored
};

Reference NaiveCrossEntropy(const Inputs& in, const CrossEntropyOptions& o, double grad_scale) {
  at::Tensor h = in.hidden.to(at::kDouble).detach().requires_grad_(true);
  at::Tensor w = in.weight.to(at::kDouble).detach().requires_grad_(true);
  at::Tensor logits = h.matmul(w.t());
  at::Tensor lse = at::logsumexp(logits, -1);
  at::Tensor valid = in.labels.ne(o.ignore_index);
  at::Tensor safe_labels = at::where(valid, in.labels, at::zeros_like(in.labels));
  at::Tensor nll = lse - logits.gather(1, safe_labels.unsqueeze(1)).squeeze(1);
  at::Tensor uniform = lse - logits.mean(-1);  // mean over classes of -log p
  at::Tensor per_token =
      (1.0 - o.label_smoothing) * nll + o.label_smoothing * uniform + o.z_loss * lse.square();
  at::Tensor losses = per_token * valid.to(at::kDouble);
  at::Tensor loss = losses.sum();
  (loss * grad_scale).backward();
  return {loss.item<double>(), h.grad(), w.grad(), losses.detach()};
}

void ExpectClose(const at::Tensor& actual, const at::Tensor& expected, double tol,
                 const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what;
  const double err = (actual.to(at::kDouble) - expected).abs().max().item<double>();
  const double scale = expected.abs().max().item<double>();
  EXPECT_LE(err, tol * std::max(scale, 1.0)) << what << " (max |expected| " << scale << ")";
}

// Runs the chunked loss, scales it (so backward sees a grad_output that is not 1) and compares
// value and both gradients with the fp64 reference.
void CheckAgainstNaive(at::ScalarType dtype, const CrossEntropyOptions& o, int64_t chunk_rows,
                       double tol, LossPath path = LossPath::kGeneric) {
  SCOPED_TRACE("chunk_rows " + std::to_string(chunk_rows) +
               (path == LossPath::kFused   ? " fused"
                : path == LossPath::kNaive ? " naive"
                                           : " generic"));
  const Inputs in = MakeInputs(dtype);
  const double grad_scale = 0.37;
  const Reference ref = NaiveCrossEntropy(in, o, grad_scale);
  at::Tensor h = in.hidden.detach().requires_grad_(true);
  at::Tensor w = in.weight.detach().requires_grad_(true);
  LinearCrossEntropy out = ChunkedCrossEntropy(h, w, in.labels, o, chunk_rows, path);
  EXPECT_EQ(out.valid_tokens().item<int64_t>(), kTokens - 5);
  EXPECT_EQ(out.sum.scalar_type(), at::kDouble);
  EXPECT_NEAR(out.sum.item<double>(), ref.loss, tol * std::abs(ref.loss));
  (out.sum * grad_scale).backward();
  EXPECT_EQ(h.grad().scalar_type(), dtype);
  EXPECT_EQ(w.grad().scalar_type(), dtype);
  ExpectClose(h.grad(), ref.grad_hidden, tol, "grad hidden");
  ExpectClose(w.grad(), ref.grad_weight, tol, "grad weight");
}

const std::vector<int64_t> kChunkSizes = {1, 7, kTokens, 1000};

TEST(ChunkedLossTest, CrossEntropyEqualsNaiveFp64ForEveryChunkSize) {
  for (int64_t rows : kChunkSizes) CheckAgainstNaive(at::kDouble, {}, rows, 1e-12);
}

TEST(ChunkedLossTest, Fp32InputsWithinFp32Tolerance) {
  for (int64_t rows : kChunkSizes) CheckAgainstNaive(at::kFloat, {}, rows, 1e-5);
}

TEST(ChunkedLossTest, Bf16InputsWithinBf16Tolerance) {
  // The reference uses the same bf16 values in fp64; what differs is the bf16 matmul (8 bits of
  // mantissa) and the bf16 gradients, so a few bf16 ulps.
  for (int64_t rows : kChunkSizes) CheckAgainstNaive(at::kBFloat16, {}, rows, 3e-2);
}

TEST(ChunkedLossTest, Fp16InputsWithinFp16Tolerance) {
  // 11 bits of mantissa: a few fp16 ulps of the logits and gradients.
  for (int64_t rows : kChunkSizes) CheckAgainstNaive(at::kHalf, {}, rows, 5e-3);
}

TEST(ChunkedLossTest, ZLossAndLabelSmoothingMatchTheirFormulas) {
  for (LossPath path : {LossPath::kGeneric, LossPath::kFused, LossPath::kNaive}) {
    CrossEntropyOptions o;
    o.label_smoothing = 0.1;
    o.z_loss = 1e-2;
    for (int64_t rows : kChunkSizes) CheckAgainstNaive(at::kDouble, o, rows, 1e-12, path);
    o.label_smoothing = 0.0;
    CheckAgainstNaive(at::kDouble, o, 7, 1e-12, path);
    o.label_smoothing = 0.25;
    o.z_loss = 0.0;
    CheckAgainstNaive(at::kDouble, o, 7, 1e-12, path);
  }
}

// The fused path's driver (matmuls around qlorad::ce_loss_grad_) with the op's CPU reference: the
// same code that runs the CUDA kernel on the GPU.
TEST(ChunkedLossTest, FusedPathEqualsNaiveInEveryPrecision) {
  for (int64_t rows : kChunkSizes) {
    CheckAgainstNaive(at::kDouble, {}, rows, 1e-12, LossPath::kFused);
    CheckAgainstNaive(at::kFloat, {}, rows, 1e-5, LossPath::kFused);
    CheckAgainstNaive(at::kHalf, {}, rows, 5e-3, LossPath::kFused);
    CheckAgainstNaive(at::kBFloat16, {}, rows, 3e-2, LossPath::kFused);
  }
  // 0 is train.loss_chunk_size auto: each path (here the trainable head's) picks its own rows.
  CheckAgainstNaive(at::kDouble, {}, 0, 1e-12, LossPath::kFused);
  CheckAgainstNaive(at::kDouble, {}, 0, 1e-12, LossPath::kGeneric);
}

TEST(ChunkedLossTest, FusedPathWithFrozenWeightAndIgnoredRows) {
  Inputs in = MakeInputs(at::kDouble);
  const Reference ref = NaiveCrossEntropy(in, {}, 1.0);
  at::Tensor h = in.hidden.detach().requires_grad_(true);
  LinearCrossEntropy out = ChunkedCrossEntropy(h, in.weight, in.labels, {}, 7, LossPath::kFused);
  out.sum.backward();
  EXPECT_NEAR(out.sum.item<double>(), ref.loss, 1e-12 * ref.loss);
  ExpectClose(h.grad(), ref.grad_hidden, 1e-12, "grad hidden");
  in.labels.fill_(-100);
  EXPECT_EQ(ChunkedCrossEntropy(in.hidden, in.weight, in.labels, {}, 7, LossPath::kFused)
                .sum.item<double>(),
            0.0);
}

#ifdef QLORAD_HAVE_NF4_OPS
// A frozen weight takes the online op (qlorad::linear_ce_online); with the trainer's chunk sizes
// its automatic tile covers this small vocabulary at once, so the op is also called directly with
// tiles of 1, 5 and 13 of the 53 columns: the online softmax state then carries across tiles.
TEST(ChunkedLossTest, FrozenWeightFusedPathWalksVocabularyTilesLikeNaive) {
  CrossEntropyOptions o;
  o.label_smoothing = 0.1;
  o.z_loss = 1e-2;
  const Inputs in = MakeInputs(at::kDouble);
  const Reference ref = NaiveCrossEntropy(in, o, 1.0);
  for (int64_t rows : {1, 7}) {
    SCOPED_TRACE("chunk_rows " + std::to_string(rows));
    at::Tensor h = in.hidden.detach().requires_grad_(true);
    LinearCrossEntropy out =
        ChunkedCrossEntropy(h, in.weight, in.labels, o, rows, LossPath::kFused);
    out.sum.backward();
    EXPECT_NEAR(out.sum.item<double>(), ref.loss, 1e-10 * ref.loss);
    ExpectClose(h.grad(), ref.grad_hidden, 1e-10, "grad hidden");
    for (int64_t cols : {1, 5, 13}) {
      SCOPED_TRACE("cols " + std::to_string(cols));
      const auto [losses, grad] =
          ops::LinearCrossEntropyOnline(in.hidden, in.weight, in.labels,
                                        {o.ignore_index, o.label_smoothing, o.z_loss}, rows, cols);
      EXPECT_EQ(losses.scalar_type(), at::kDouble);
      ExpectClose(losses, ref.losses, 1e-10, "losses");
      ExpectClose(grad, ref.grad_hidden, 1e-10, "grad hidden");
    }
  }
}
#endif

// Backward scales the gradients forward stored in place; a second backward through a retained
// graph would scale them again, so it must fail instead.
TEST(ChunkedLossTest, FusedPathRefusesASecondBackward) {
  const Inputs in = MakeInputs(at::kFloat);
  at::Tensor h = in.hidden.detach().requires_grad_(true);
  at::Tensor loss = ChunkedCrossEntropy(h, in.weight, in.labels, {}, 7, LossPath::kFused).sum * 0.5;
  loss.backward({}, /*retain_graph=*/true);
  EXPECT_THROW(loss.backward(), c10::Error);
}

TEST(ChunkedLossTest, FusedChunkRowsFollowTheSizes) {
  // The bench's shapes: 256 rows (the matmul floor) up to a quarter of the hidden states' bytes.
  EXPECT_EQ(FusedLossChunkRows(8192, 2048, 128256), kFusedLossMinChunkRows);
  EXPECT_EQ(FusedLossChunkRows(32768, 4096, 128256), 32768 * 4096 / 4 / 128256);
  EXPECT_GT(FusedLossChunkRows(32768, 4096, 128256), kFusedLossMinChunkRows);
  // Never above the generic budget: 256 MiB of fp32 logits.
  EXPECT_EQ(FusedLossChunkRows(1 << 20, 8192, 128256), ResolveLossChunkRows(0, 128256));
}

#ifdef QLORAD_HAVE_NF4_OPS
// The op's argument checks run before any implementation reads data (the CPU one here; the CUDA
// and Meta ones call the same function first), and each bad argument names itself.
TEST(ChunkedLossTest, FusedKernelOpRejectsBadArgumentsClearly) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor logits = at::randn({3, 10}, gen, at::kFloat);
  const at::Tensor labels = at::randint(10, {3}, gen, at::kLong);
  auto error_of = [](at::Tensor x, const at::Tensor& y) -> std::string {
    try {
      ops::CrossEntropyLossAndGrad_(x, y, {}, 1.0);
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
    return "";
  };
  EXPECT_NE(error_of(logits.clone(), labels.to(at::kInt)).find("int64 labels"), std::string::npos);
  EXPECT_NE(error_of(logits.clone(), labels.narrow(0, 0, 2)).find("expected labels [3]"),
            std::string::npos);
  // Transposed: [10, 3] with strides (1, 10); with 3 labels and with 10, the layout is named.
  const at::Tensor transposed = logits.clone().t();
  for (const at::Tensor& y : {labels, at::zeros({10}, at::kLong)}) {
    EXPECT_NE(error_of(transposed, y).find("contiguous along the vocabulary"), std::string::npos);
  }
  // Rows that overlap (an expanded row) would be overwritten while being read.
  EXPECT_NE(error_of(logits.narrow(0, 0, 1).expand({3, 10}), labels).find("rows apart"),
            std::string::npos);
  EXPECT_NE(error_of(logits.flatten(), labels).find("[rows, vocab]"), std::string::npos);
  // None of these touched the logits.
  const at::Tensor before = logits.clone();
  error_of(logits, labels.narrow(0, 0, 2));
  EXPECT_TRUE(at::equal(logits, before));
}
#endif

TEST(ChunkedLossTest, IgnoredTokensGetNoLossAndNoGradient) {
  Inputs in = MakeInputs(at::kDouble);
  in.labels.fill_(-100);
  in.labels[3] = 4;
  at::Tensor h = in.hidden.detach().requires_grad_(true);
  LinearCrossEntropy out = ChunkedCrossEntropy(h, in.weight, in.labels, {}, 7);
  EXPECT_EQ(out.valid_tokens().item<int64_t>(), 1);
  out.sum.backward();
  at::Tensor row_has_grad = h.grad().abs().sum(1).ne(0);
  EXPECT_TRUE(row_has_grad[3].item<bool>());
  EXPECT_EQ(row_has_grad.sum().item<int64_t>(), 1);

  in.labels.fill_(-100);  // a micro-batch of padding: sum 0, not NaN
  LinearCrossEntropy none = ChunkedCrossEntropy(in.hidden, in.weight, in.labels, {}, 7);
  EXPECT_EQ(none.valid_tokens().item<int64_t>(), 0);
  EXPECT_EQ(none.sum.item<double>(), 0.0);
}

TEST(ChunkedLossTest, FrozenWeightGetsNoGradientAndHiddenStillMatches) {
  const Inputs in = MakeInputs(at::kDouble);
  const Reference ref = NaiveCrossEntropy(in, {}, 1.0);
  at::Tensor h = in.hidden.detach().requires_grad_(true);
  at::Tensor w = in.weight.detach();  // a frozen lm_head
  ChunkedCrossEntropy(h, w, in.labels, {}, 7).sum.backward();
  EXPECT_FALSE(w.grad().defined());
  ExpectClose(h.grad(), ref.grad_hidden, 1e-12, "grad hidden");
}

TEST(ChunkedLossTest, GenericPathTakesAnyLossForExampleKlToReferenceLogits) {
  // Forward KL(ref || model) per token, written as plain LibTorch code: its gradient comes from
  // autograd on each chunk. Targets are reference logits [tokens, vocab].
  const Inputs in = MakeInputs(at::kDouble);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const at::Tensor ref_logits = at::randn({kTokens, kVocab}, gen, at::kDouble);
  auto kl = [](const at::Tensor& logits, const ChunkTargets& targets) {
    at::Tensor ref_logp = at::log_softmax(targets[0], -1);
    return (ref_logp.exp() * (ref_logp - at::log_softmax(logits, -1))).sum();
  };
  at::Tensor h_ref = in.hidden.detach().requires_grad_(true);
  at::Tensor w_ref = in.weight.detach().requires_grad_(true);
  at::Tensor expected = kl(h_ref.matmul(w_ref.t()), {ref_logits});
  expected.backward();
  for (int64_t rows : kChunkSizes) {
    SCOPED_TRACE("chunk_rows " + std::to_string(rows));
    at::Tensor h = in.hidden.detach().requires_grad_(true);
    at::Tensor w = in.weight.detach().requires_grad_(true);
    at::Tensor got = ChunkedLinearLoss(h, w, {ref_logits}, kl, rows);
    EXPECT_NEAR(got.item<double>(), expected.item<double>(), 1e-12 * expected.item<double>());
    got.backward();
    ExpectClose(h.grad(), h_ref.grad(), 1e-12, "grad hidden");
    ExpectClose(w.grad(), w_ref.grad(), 1e-12, "grad weight");
  }
}

TEST(ChunkedLossTest, AutoChunkKeepsFp32LogitsUnderTheBudget) {
  EXPECT_EQ(ResolveLossChunkRows(5, 128256), 5);
  const int64_t rows = ResolveLossChunkRows(0, 128256);
  EXPECT_LE(rows * 128256 * 4, kDefaultLossChunkBudgetBytes);
  EXPECT_GT((rows + 1) * 128256 * 4, kDefaultLossChunkBudgetBytes);
  EXPECT_EQ(ResolveLossChunkRows(0, 1000, 100), 1);  // never zero rows
}

TEST(ChunkedLossTest, BadShapesAreClearErrors) {
  const Inputs in = MakeInputs(at::kFloat);
  EXPECT_THROW(ChunkedCrossEntropy(in.hidden, in.weight.t(), in.labels, {}, 7), c10::Error);
  EXPECT_THROW(ChunkedCrossEntropy(in.hidden, in.weight, in.labels.narrow(0, 0, 3), {}, 7),
               c10::Error);
  EXPECT_THROW(ChunkedCrossEntropy(in.hidden, in.weight, in.labels, {}, -1), c10::Error);
  // 0 is train.loss_chunk_size auto: every path picks its own size.
  for (LossPath path : {LossPath::kGeneric, LossPath::kFused}) {
    EXPECT_NO_THROW(ChunkedCrossEntropy(in.hidden, in.weight, in.labels, {}, 0, path));
  }
}

// 60 optimizer steps on the tiny model: the loss curves with chunks of 7 rows, with the auto size
// and with one chunk larger than the input each equal the naive one (every logit at once, upcast to
// fp32, at::cross_entropy and plain autograd: LossPath::kNaive, no chunking code at all), step by
// step within fp32 rounding, so chunking changes no step's update beyond rounding.
TEST(ChunkedLossTest, TinyModelTrainingMatchesNaiveLossCurve) {
  TempDir dir;
  testing::WriteTinyModelAndText(dir);
  auto run = [&](const std::string& chunk, const std::string& tag) {
    return testing::TinyRunLosses(
        dir, "{r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj, down_proj]}", 60,
        chunk, tag);
  };
  std::vector<double> naive;
  {
    const ScopedAutoLossPath reference(LossPath::kNaive);
    naive = run("auto", "naive");
  }
  const std::vector<double> chunked = run("7", "7"), automatic = run("auto", "auto"),
                            whole = run("100000", "whole");
  ASSERT_EQ(naive.size(), 60u);
  for (const auto* curve : {&chunked, &automatic, &whole}) {
    ASSERT_EQ(curve->size(), 60u);
    for (size_t i = 0; i < naive.size(); ++i) {
      EXPECT_NEAR((*curve)[i], naive[i], 1e-5 * naive[i]) << "step " << i + 1;
    }
  }
  EXPECT_LT(naive.back(), naive.front());
}

}  // namespace
}  // namespace qlorad::trainer
