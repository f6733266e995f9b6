// LoRA on lm_head: the model's head LoRA (shapes, init, place among the trainable parameters) and
// its gradients through the chunked loss against plain fp64 autograd on the full logits; its
// dropout (drawn in training mode only) and a tiny-model run that trains with it.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tests/unit/trainer/tiny_run.h"
#include "worker/trainer/loss/chunked_loss.h"
#include "worker/trainer/model/llama_model.h"
#include "worker/trainer/model/qlora.h"
#include "worker/trainer/train/loss_head.h"

namespace qlorad::trainer {
namespace {

LlamaConfig TinyConfig(bool tied) {
  LlamaConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 29;
  c.tie_word_embeddings = tied;
  return c;
}

LlamaModel BuildWithLora(bool tied, const std::vector<std::string>& targets, double dropout = 0.0) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto model = BuildLlamaModel(
      TinyConfig(tied),
      [&](const std::string&, const std::vector<int64_t>& shape) -> StatusOr<at::Tensor> {
        return at::randn(shape, gen, at::kDouble) * 0.3;
      },
      at::kCPU, at::kDouble);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  QuantizationSpec none;
  none.type = QuantizationType::kNone;
  LoraSpec lora;
  lora.r = 4;
  lora.alpha = 8;
  lora.use_rslora = true;
  lora.target_modules = targets;
  lora.dropout = dropout;
  EXPECT_TRUE(ApplyQLora(*model, none, lora, /*seed=*/3).ok());
  return *model;
}

TEST(LmHeadLoraTest, HeadGetsLoraLastWithoutChangingTheOthersInit) {
  const LlamaModel with = BuildWithLora(true, {"q_proj", "lm_head"});
  const LlamaModel without = BuildWithLora(true, {"q_proj"});
  const auto params = LoraParameters(with);
  ASSERT_EQ(params.size(), 4u);
  EXPECT_TRUE(params[0].equal(LoraParameters(without)[0]));  // q_proj's A drawn as before
  const QLoraLinear& head = with->lm_head_linear();
  EXPECT_TRUE(params[2].is_same(head->lora_a()) && params[3].is_same(head->lora_b()));
  EXPECT_EQ(head->lora_a().sizes(), (at::IntArrayRef{4, 16}));
  EXPECT_EQ(head->lora_b().sizes(), (at::IntArrayRef{29, 4}));
  EXPECT_EQ(head->lora_b().count_nonzero().item<int64_t>(), 0);
  EXPECT_DOUBLE_EQ(head->lora_options().scale, 8.0 / 2.0);  // rsLoRA: alpha / sqrt(r)
  EXPECT_FALSE(with->lm_head().requires_grad());
}

TEST(LmHeadLoraTest, ChunkedLossGradientsEqualFp64AutogradOnFullLogits) {
  for (const bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    const LlamaModel model = BuildWithLora(tied, {"lm_head"});
    const LinearHead head = LossHeadOf(model);
    ASSERT_TRUE(head.has_lora());
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
    {
      at::NoGradGuard no_grad;
      head.lora_b.normal_(0.0, 0.2, gen);  // zero at init: A's gradient would be zero too
    }
    const at::Tensor hidden = at::randn({13, 16}, gen, at::kDouble);
    at::Tensor labels = at::randint(0, 29, {13}, gen, at::kLong);
    labels[2] = -100;
    const LinearCrossEntropy got =
        ChunkedCrossEntropy(hidden, head, labels, {}, /*chunk_rows=*/4, LossPath::kGeneric);
    got.sum.backward();

    const at::Tensor a = head.lora_a.detach().to(at::kDouble).requires_grad_(true);
    const at::Tensor b = head.lora_b.detach().to(at::kDouble).requires_grad_(true);
    const at::Tensor logits = at::linear(hidden, model->lm_head()) +
                              at::linear(at::linear(hidden, a), b) * head.lora_scale;
    const at::Tensor want = at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum, -100);
    want.backward();
    EXPECT_NEAR(got.sum.item<double>(), want.item<double>(), 1e-10);
    EXPECT_EQ(got.valid_tokens().item<int64_t>(), 12);
    // A and B are fp32 parameters: their fp64 gradients are rounded once on the way back.
    EXPECT_TRUE(at::allclose(head.lora_a.grad().to(at::kDouble), a.grad(), 1e-6, 1e-7));
    EXPECT_TRUE(at::allclose(head.lora_b.grad().to(at::kDouble), b.grad(), 1e-6, 1e-7));
    EXPECT_FALSE(model->lm_head().grad().defined());  // the base head (or embedding) is frozen
    // Eval's logits take the same LoRA (its adapter path computes in fp32).
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::allclose(model->Logits(hidden).to(at::kDouble), logits, 1e-5, 1e-5));
  }
}

// The head's adapter input: dropout(hidden) in training mode when it has dropout (each entry 0 or
// scaled by 1 / (1 - p), a fresh draw per call); hidden itself (undefined) in eval mode, without
// dropout or without a head LoRA. The gradient of hidden then goes through that mask.
TEST(LmHeadLoraTest, LossHeadDrawsTheHeadDropoutInTrainingOnly) {
  const double p = 0.25;
  LlamaModel model = BuildWithLora(false, {"lm_head"}, p);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(13);
  const at::Tensor hidden = at::randn({64, 16}, gen, at::kDouble);
  model->train();
  torch::manual_seed(1);
  const LinearHead head = LossHeadOf(model, hidden);
  ASSERT_TRUE(head.has_lora_input());
  const at::Tensor kept = head.lora_input.ne(0);
  EXPECT_TRUE(at::allclose(head.lora_input, at::where(kept, hidden / (1 - p), 0.0), 1e-15, 0));
  const double kept_share = kept.to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(kept_share, 1 - p, 0.06);  // 1024 draws: ~4.4 standard deviations
  EXPECT_FALSE(LossHeadOf(model, hidden).lora_input.equal(head.lora_input));  // drawn per call
  EXPECT_TRUE(head.lora_a.is_same(LossHeadOf(model).lora_a));

  model->eval();
  EXPECT_FALSE(LossHeadOf(model, hidden).has_lora_input());
  model->train();
  EXPECT_FALSE(LossHeadOf(BuildWithLora(false, {"lm_head"}), hidden).has_lora_input());
  EXPECT_FALSE(LossHeadOf(BuildWithLora(false, {"q_proj"}, p), hidden).has_lora_input());
}

// A tiny-model run with lm_head among the targets and lora.dropout 0.1 trains: the
// loss stays finite and falls, and the curve equals the one on the naive loss path (every logit at
// once, no chunking code) within fp32 rounding, both drawing the same dropout masks. With only the
// head targeted, dropout 0 and 0.1 give the same first step (B starts at zero, so the head's LoRA
// adds nothing yet) and different later ones (the head's dropout is applied).
TEST(LmHeadLoraTest, TinyModelTrainsWithHeadDropout) {
  testing::TempDir dir;
  testing::WriteTinyModelAndText(dir);
  auto run = [&](const std::string& dropout, const std::string& targets, const std::string& tag) {
    return testing::TinyRunLosses(
        dir, "{r: 4, alpha: 8, dropout: " + dropout + ", target_modules: [" + targets + "]}", 30,
        "7", tag);
  };
  const std::string all = "q_proj, v_proj, lm_head";
  const std::vector<double> chunked = run("0.1", all, "chunked");
  std::vector<double> naive;
  {
    const ScopedAutoLossPath reference(LossPath::kNaive);
    naive = run("0.1", all, "naive");
  }
  ASSERT_EQ(chunked.size(), 30u);
  ASSERT_EQ(naive.size(), 30u);
  for (size_t i = 0; i < chunked.size(); ++i) {
    EXPECT_TRUE(std::isfinite(chunked[i])) << "step " << i + 1;
    EXPECT_NEAR(chunked[i], naive[i], 1e-5 * naive[i]) << "step " << i + 1;
  }
  EXPECT_LT(chunked.back(), 0.9 * chunked.front());

  const std::vector<double> head_off = run("0.0", "lm_head", "head0");
  const std::vector<double> head_on = run("0.1", "lm_head", "head1");
  ASSERT_EQ(head_off.size(), 30u);
  ASSERT_EQ(head_on.size(), 30u);
  EXPECT_EQ(head_on[0], head_off[0]);
  EXPECT_NE(head_on.back(), head_off.back());
}

}  // namespace
}  // namespace qlorad::trainer
