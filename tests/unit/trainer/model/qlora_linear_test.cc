#include "worker/trainer/model/qlora_linear.h"

#include <gtest/gtest.h>

#include <cmath>

namespace qlorad::trainer {
namespace {

at::Generator Gen(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

TEST(QLoraLinearTest, ZeroBGivesExactlyTheBaseOutput) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    at::Tensor w = at::randn({24, 16}, Gen(1), at::kFloat).to(dtype);
    at::Tensor x = at::randn({3, 5, 16}, Gen(2), at::kFloat).to(dtype);
    QLoraLinear plain(w.clone());
    QLoraLinear adapted(w.clone());
    adapted->AddLora({4, 2.0, 0.0}, Gen(3));
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(plain->forward(x), adapted->forward(x))) << c10::toString(dtype);
    EXPECT_TRUE(at::equal(plain->forward(x), at::linear(x, w)));
  }
}

TEST(QLoraLinearTest, ForwardIsBasePlusScaledLowRankUpdate) {
  at::Tensor w = at::randn({8, 6}, Gen(4));
  QLoraLinear layer(w.clone());
  layer->AddLora({2, 0.5, 0.0}, Gen(5));
  {
    at::NoGradGuard no_grad;
    layer->lora_b().copy_(at::randn({8, 2}, Gen(6)));
  }
  at::Tensor x = at::randn({4, 6}, Gen(7), at::kDouble);
  at::NoGradGuard no_grad;
  at::Tensor got = layer->forward(x.to(at::kFloat)).to(at::kDouble);
  at::Tensor a = layer->lora_a().to(at::kDouble), b = layer->lora_b().to(at::kDouble);
  at::Tensor expected =
      at::matmul(x, w.to(at::kDouble).t()) + 0.5 * at::matmul(at::matmul(x, a.t()), b.t());
  EXPECT_LT((got - expected).abs().max().item<double>(), 1e-5);
}

// lora.compute_precision: bf16 multiplies bf16 activations by bf16 copies of the fp32 adapter
// (no upcast): within bf16 rounding of the fp64 result, and the gradients reach the fp32
// parameters as fp32.
TEST(QLoraLinearTest, Bf16ComputeMatchesFp64WithinBf16RoundingAndTrainsFp32Parameters) {
  at::Tensor w = at::randn({32, 48}, Gen(11)).to(at::kBFloat16);
  QLoraLinear layer(w.clone());
  layer->AddLora({8, 2.0, 0.0, at::kBFloat16}, Gen(12));
  {
    at::NoGradGuard no_grad;
    layer->lora_b().copy_(at::randn({32, 8}, Gen(13)));
  }
  const at::Tensor x = at::randn({6, 48}, Gen(14)).to(at::kBFloat16);
  const at::Tensor got = layer->forward(x);
  EXPECT_EQ(got.scalar_type(), at::kBFloat16);
  const at::Tensor xd = x.to(at::kDouble);
  const at::Tensor a = layer->lora_a().detach().to(at::kDouble);
  const at::Tensor b = layer->lora_b().detach().to(at::kDouble);
  const at::Tensor expected =
      at::matmul(xd, w.to(at::kDouble).t()) + 2.0 * at::matmul(at::matmul(xd, a.t()), b.t());
  // A few bf16 roundings (the inputs of each matmul, its output, the add): 2^-8 each, relative
  // to the largest magnitude.
  const double scale = expected.abs().max().item<double>();
  EXPECT_LT((got.to(at::kDouble) - expected).abs().max().item<double>(), 4 * scale / 256);
  got.to(at::kFloat).sum().backward();
  ASSERT_TRUE(layer->lora_a().grad().defined());
  EXPECT_EQ(layer->lora_a().grad().scalar_type(), at::kFloat);
  EXPECT_EQ(layer->lora_b().grad().scalar_type(), at::kFloat);
  EXPECT_GT(layer->lora_b().grad().abs().max().item<float>(), 0.0f);
}

TEST(QLoraLinearTest, InitFollowsPeftShapesAndBounds) {
  QLoraLinear layer(at::zeros({10, 64}));
  layer->AddLora({8, 1.0, 0.0}, Gen(8));
  EXPECT_EQ(layer->lora_a().sizes(), (std::vector<int64_t>{8, 64}));
  EXPECT_EQ(layer->lora_b().sizes(), (std::vector<int64_t>{10, 8}));
  EXPECT_EQ(layer->lora_a().scalar_type(), at::kFloat);
  EXPECT_TRUE(layer->lora_a().requires_grad());
  EXPECT_EQ(layer->lora_b().abs().max().item<float>(), 0.0f);
  // kaiming_uniform(a=sqrt(5)) bound = 1/sqrt(fan_in) = 1/8; a uniform sample of 512 fills it.
  const double max = layer->lora_a().abs().max().item<double>();
  EXPECT_LE(max, 0.125);
  EXPECT_GT(max, 0.12);
  // Same seed, same adapter.
  QLoraLinear again(at::zeros({10, 64}));
  again->AddLora({8, 1.0, 0.0}, Gen(8));
  EXPECT_TRUE(at::equal(again->lora_a(), layer->lora_a()));
}

TEST(QLoraLinearTest, OnlyLoraReceivesGradients) {
  at::Tensor w = at::randn({5, 4}, Gen(9));
  QLoraLinear layer(w);
  layer->AddLora({2, 1.0, 0.0}, Gen(10));
  EXPECT_EQ(layer->parameters().size(), 2u);
  layer->forward(at::randn({3, 4}, Gen(11))).sum().backward();
  EXPECT_FALSE(w.grad().defined());
  EXPECT_TRUE(layer->lora_b().grad().defined());
  EXPECT_GT(layer->lora_b().grad().abs().sum().item<double>(), 0.0);
}

TEST(QLoraLinearTest, DropoutOnlyInTrainingMode) {
  QLoraLinear layer(at::zeros({6, 6}));
  layer->AddLora({3, 1.0, 0.5}, Gen(12));
  {
    at::NoGradGuard no_grad;
    layer->lora_b().fill_(1.0);
  }
  at::Tensor x = at::ones({2, 6});
  at::NoGradGuard no_grad;
  layer->eval();
  at::Tensor a = layer->forward(x), b = layer->forward(x);
  EXPECT_TRUE(at::equal(a, b));
  layer->train();
  torch::manual_seed(1);
  at::Tensor c = layer->forward(x);
  torch::manual_seed(1);
  EXPECT_TRUE(at::equal(c, layer->forward(x)));  // reseeding reproduces the masks
  EXPECT_FALSE(at::equal(c, a));
}

}  // namespace
}  // namespace qlorad::trainer
