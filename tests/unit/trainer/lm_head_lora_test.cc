// LoRA on lm_head: the model's head LoRA (shapes, init, place among the trainable parameters) and
// its gradients through the chunked loss against plain fp64 autograd on the full logits.
#include <gtest/gtest.h>

#include "worker/trainer/chunked_loss.h"
#include "worker/trainer/llama_model.h"
#include "worker/trainer/qlora.h"

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

LlamaModel BuildWithLora(bool tied, const std::vector<std::string>& targets) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto model = BuildLlamaModel(
      TinyConfig(tied),
      [&](const std::string&, const std::vector<int64_t>& shape) -> StatusOr<at::Tensor> {
        return at::randn(shape, gen, at::kDouble) * 0.3;
      },
      at::kCPU, at::kDouble);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  QuantizationSpec none;
  none.type = "none";
  LoraSpec lora;
  lora.r = 4;
  lora.alpha = 8;
  lora.use_rslora = true;
  lora.target_modules = targets;
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
    const LinearHead head = model->LossHead();
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
    EXPECT_EQ(got.valid_tokens, 12);
    // A and B are fp32 parameters: their fp64 gradients are rounded once on the way back.
    EXPECT_TRUE(at::allclose(head.lora_a.grad().to(at::kDouble), a.grad(), 1e-6, 1e-7));
    EXPECT_TRUE(at::allclose(head.lora_b.grad().to(at::kDouble), b.grad(), 1e-6, 1e-7));
    EXPECT_FALSE(model->lm_head().grad().defined());  // the base head (or embedding) is frozen
    // Eval's logits take the same LoRA (its adapter path computes in fp32).
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::allclose(model->Logits(hidden).to(at::kDouble), logits, 1e-5, 1e-5));
  }
}

}  // namespace
}  // namespace qlorad::trainer
