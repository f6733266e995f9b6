#include "worker/trainer/model/fused_layers.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/unit/trainer/model/lora_layer_maker.h"
#include "worker/trainer/model/graph_only_forward.h"

namespace qlorad::trainer {
namespace {

at::Generator Gen(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// A down projection [16 <- 24] with an adapter whose B is not zero.
QLoraLinear MakeDown() {
  return testing::RandomLoraLayer(16, 24, 1);
}

struct Grads {
  at::Tensor y, gate_up, a, b;
};

// y = down(silu(gate) * up), backward from dy: the fused function (`room`: SwiGLU leaves room for
// down's x A^T, which then folds its adapter into its GEMM), or module by module.
Grads RunMlpTail(QLoraLinear down, const at::Tensor& gate_up_in, const at::Tensor& dy, bool fused,
                 bool room = false) {
  down->lora_a().mutable_grad() = at::Tensor();
  down->lora_b().mutable_grad() = at::Tensor();
  at::Tensor gate_up = gate_up_in.detach().clone().requires_grad_(true);
  FusedProjection projection({down});  // outlives the graph, which borrows it
  projection.set_folding(LoraFolding::kBoth);
  projection.SetFedWithRoom(room);
  EXPECT_EQ(projection.InputRoom(), room ? 8 : 0);  // rank 4, rounded up to 8
  at::Tensor y;
  if (fused) {
    EXPECT_TRUE(projection.Applies(gate_up));
    y = FusedSwigluDown(gate_up, projection);
  } else {
    const auto parts = gate_up.chunk(2, -1);
    y = down->forward(at::silu(parts[0]) * parts[1]);
  }
  y.backward(dy);
  return {y.detach(), gate_up.grad(), down->lora_a().grad(), down->lora_b().grad()};
}

class FusedSwigluDownTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!FusedLayersAvailable(at::kCPU, at::kFloat)) GTEST_SKIP() << "built without qlorad_ops";
  }
  QLoraLinear down_ = MakeDown();
  at::Tensor gate_up_ = at::randn({2, 5, 48}, Gen(4));
  at::Tensor dy_ = at::randn({2, 5, 16}, Gen(5));
};

// fp32: the same products summed in another order (the LoRA update inside the GEMM's addmm).
TEST_F(FusedSwigluDownTest, MatchesModuleByModuleInFp32) {
  const Grads want = RunMlpTail(down_, gate_up_, dy_, /*fused=*/false);
  const Grads got = RunMlpTail(down_, gate_up_, dy_, /*fused=*/true);
  EXPECT_TRUE(at::allclose(got.y, want.y, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(got.gate_up, want.gate_up, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(got.a, want.a, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(got.b, want.b, 1e-5, 1e-5));
}

// With room after SwiGLU's rows, down folds its adapter into its GEMM ([h | h A^T] [W | s B]^T):
// the same sums to fp32 rounding, and the same gradients.
TEST_F(FusedSwigluDownTest, WithRoomForXaMatchesModuleByModule) {
  const Grads want = RunMlpTail(down_, gate_up_, dy_, /*fused=*/false);
  const Grads got = RunMlpTail(down_, gate_up_, dy_, /*fused=*/true, /*room=*/true);
  EXPECT_TRUE(at::allclose(got.y, want.y, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(got.gate_up, want.gate_up, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(got.a, want.a, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(got.b, want.b, 1e-5, 1e-5));
}

// The fork's second output is x itself; x's gradient is the norm's backward plus the residual's
// gradient, as autograd's sum of the two uses of x would give.
TEST(FusedRmsNormForkTest, AddsTheResidualGradientInsideTheNormBackward) {
  if (!FusedLayersAvailable(at::kCPU, at::kFloat)) GTEST_SKIP() << "built without qlorad_ops";
  const at::Tensor x_in = at::randn({3, 4, 16}, Gen(6));
  const at::Tensor weight = at::randn({16}, Gen(7));
  const at::Tensor dy = at::randn({3, 4, 16}, Gen(8));
  const at::Tensor dres = at::randn({3, 4, 16}, Gen(9));

  at::Tensor x = x_in.clone().requires_grad_(true);
  const auto [y, residual] = FusedRmsNormFork(x, weight, 1e-6);
  EXPECT_TRUE(at::equal(residual, x_in));
  ((y * dy).sum() + (residual * dres).sum()).backward();

  at::Tensor x_ref = x_in.clone().requires_grad_(true);
  const at::Tensor y_ref = FusedRmsNorm(x_ref, weight, 1e-6);
  ((y_ref * dy).sum() + (x_ref * dres).sum()).backward();
  EXPECT_TRUE(at::allclose(y, y_ref));
  EXPECT_TRUE(at::allclose(x.grad(), x_ref.grad(), 1e-5, 1e-6));
}

// The norms' spare columns (room for a folded projection's x A): the same values and the same
// gradients as without, bit for bit, through the fork and the add form.
TEST(FusedRmsNormForkTest, SpareColumnsChangeNeitherValuesNorGradients) {
  if (!FusedLayersAvailable(at::kCPU, at::kFloat)) GTEST_SKIP() << "built without qlorad_ops";
  const at::Tensor x_in = at::randn({3, 4, 16}, Gen(10));
  const at::Tensor other = at::randn({3, 4, 16}, Gen(11));
  const at::Tensor weight = at::randn({16}, Gen(12));
  const at::Tensor dy = at::randn({3, 4, 16}, Gen(13));
  std::vector<at::Tensor> grads[2];
  for (int64_t spare : {0, 8}) {
    at::Tensor x = x_in.clone().requires_grad_(true);
    const auto [y, residual] = FusedRmsNormFork(x, weight, 1e-6, spare);
    const auto [h, y2] = FusedAddRmsNorm(y, residual, weight, 1e-6, spare);
    EXPECT_EQ(y.stride(1), 16 + spare);
    EXPECT_EQ(y2.stride(1), 16 + spare);
    ((y2 * dy).sum() + (h * other).sum()).backward();
    grads[spare > 0].insert(grads[spare > 0].end(), {y.detach(), y2.detach(), x.grad()});
  }
  for (size_t i = 0; i < grads[0].size(); ++i)
    EXPECT_TRUE(at::equal(grads[0][i], grads[1][i])) << i;
}

TEST(GraphOnlyForwardTest, NestsAndRestores) {
  EXPECT_FALSE(InGraphOnlyForward());
  {
    GraphOnlyForward outer;
    EXPECT_TRUE(InGraphOnlyForward());
    {
      GraphOnlyForward inner;
      EXPECT_TRUE(InGraphOnlyForward());
    }
    EXPECT_TRUE(InGraphOnlyForward());
  }
  EXPECT_FALSE(InGraphOnlyForward());
}

}  // namespace
}  // namespace qlorad::trainer
