// Activation checkpointing (worker/trainer/activation_checkpoint.h) against the same computation
// without it. The recompute runs the same fp32 CPU kernels on the same inputs, and here the
// results come out bitwise equal. The tolerance, 1e-6 of the largest reference value (about ten
// fp32 ulps), leaves room only for a kernel that picks another algorithm when grad mode is off
// (the checkpointed forward); a lost or doubled gradient, or another dropout mask, is off by O(1).
#include "worker/trainer/activation_checkpoint.h"

#include <gtest/gtest.h>

#include <vector>

namespace qlorad::trainer {
namespace {

constexpr double kRelativeTolerance = 1e-6;

void ExpectClose(const at::Tensor& actual, const at::Tensor& expected, const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what;
  ASSERT_TRUE(expected.defined()) << what;
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const double scale = expected.abs().max().item<double>();
  ASSERT_GT(scale, 0.0) << what << ": the reference is all zeros, the comparison is vacuous";
  EXPECT_LE((actual - expected).abs().max().item<double>(), kRelativeTolerance * scale) << what;
}

// tanh(dropout(x) W) * scale, with W a leaf the checkpoint never sees as an input.
struct Toy {
  at::Tensor w = at::randn({6, 5}, at::kFloat).requires_grad_(true);
  at::Tensor scale = at::rand({5}, at::kFloat) + 0.5;
  double p = 0.0;
  std::vector<bool> recomputing;  // InActivationRecompute() at each call

  at::Tensor operator()(const at::Tensor& x, at::TensorList extras) {
    recomputing.push_back(InActivationRecompute());
    return at::tanh(at::matmul(at::dropout(x, p, /*train=*/p > 0), w)) * extras[0];
  }
};

struct ToyGrads {
  at::Tensor y, x_grad, w_grad, after;  // `after`: a draw from the generator after backward
};

ToyGrads RunToy(Toy& toy, const at::Tensor& x_value, bool x_requires_grad, bool checkpoint) {
  at::Tensor x = x_value.clone().requires_grad_(x_requires_grad);
  toy.w.mutable_grad() = at::Tensor();
  torch::manual_seed(11);
  const CheckpointedFunction fn = [&toy](const at::Tensor& in, at::TensorList extras) {
    return toy(in, extras);
  };
  at::Tensor y = checkpoint ? Checkpoint(fn, x, {toy.scale}) : fn(x, {toy.scale});
  (y * at::arange(y.numel(), at::kFloat).view_as(y).cos()).sum().backward();
  return {y.detach(), x_requires_grad ? x.grad() : at::Tensor(), toy.w.grad(), at::rand({4})};
}

TEST(ActivationCheckpointTest, GradientsAndDropoutMasksEqualTheDirectComputation) {
  torch::manual_seed(3);
  Toy toy;
  const at::Tensor x = at::randn({4, 6});
  for (const double p : {0.0, 0.3}) {
    toy.p = p;
    for (const bool x_requires_grad : {true, false}) {
      const std::string what = "p " + std::to_string(p) + (x_requires_grad ? " x" : " frozen x");
      const ToyGrads direct = RunToy(toy, x, x_requires_grad, false);
      toy.recomputing.clear();
      const ToyGrads checkpointed = RunToy(toy, x, x_requires_grad, true);
      // Once in forward, once again in backward, and only the second call is a recompute.
      EXPECT_EQ(toy.recomputing, (std::vector<bool>{false, true})) << what;
      EXPECT_FALSE(InActivationRecompute());
      ExpectClose(checkpointed.y, direct.y, what + ": y");
      ExpectClose(checkpointed.w_grad, direct.w_grad, what + ": W grad");
      if (x_requires_grad) ExpectClose(checkpointed.x_grad, direct.x_grad, what + ": x grad");
      // The generator is back where the direct run left it.
      EXPECT_TRUE(checkpointed.after.equal(direct.after)) << what;
    }
  }
}

TEST(ActivationCheckpointTest, ForwardKeepsNoGraphOfTheFunction) {
  Toy toy;
  const at::Tensor x = at::randn({4, 6}).requires_grad_(true);
  const CheckpointedFunction fn = [&toy](const at::Tensor& in, at::TensorList extras) {
    return toy(in, extras);
  };
  const at::Tensor y = Checkpoint(fn, x, {toy.scale});
  // One node, the checkpoint's, with edges to x and to the extra (none: it takes no gradient):
  // tanh, matmul and mul were not recorded, and W is reached only by the recompute.
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_NE(y.grad_fn()->name().find("CheckpointFunction"), std::string::npos)
      << y.grad_fn()->name();
  ASSERT_EQ(y.grad_fn()->next_edges().size(), 2u);
  EXPECT_EQ(y.grad_fn()->next_edges()[0].function->name(), "torch::autograd::AccumulateGrad");
  EXPECT_FALSE(y.grad_fn()->next_edges()[1].is_valid());
  // Under no grad it is the plain function.
  at::NoGradGuard no_grad;
  EXPECT_EQ(Checkpoint(fn, x, {toy.scale}).grad_fn(), nullptr);
}

TEST(ActivationCheckpointTest, ExtrasThatRequireGradAreRefused) {
  Toy toy;
  const CheckpointedFunction fn = [&toy](const at::Tensor& in, at::TensorList extras) {
    return toy(in, extras);
  };
  const at::Tensor scale = toy.scale.clone().requires_grad_(true);
  EXPECT_THROW(Checkpoint(fn, at::randn({4, 6}), {scale}), c10::Error);
}

}  // namespace
}  // namespace qlorad::trainer
