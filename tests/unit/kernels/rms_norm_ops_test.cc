// Tests of the fused RMSNorm ops on CPU and Meta (kernels/torch/rms_norm_ops.h): the forward
// against Hugging Face's LlamaRMSNorm formula run by torch in the same dtype, the backward against
// fp64 autograd of that formula, the residual forms, shapes under Meta, and the error messages.
// The CUDA kernels are checked against these CPU ops by tests/gpu/test_rms_norm_ops.py.
#include "kernels/torch/rms_norm_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "tests/unit/kernels/expect_error.h"

namespace qlorad::ops {
namespace {

constexpr double kEps = 1e-5;

// Rows of various lengths: several leading dimensions, odd H, H not a multiple of 8 (no 16-byte
// packs on CUDA), enough rows for the CPU op to split them across threads, a long row.
const std::vector<std::vector<int64_t>> kShapes = {
    {2, 3, 64}, {5, 37}, {4, 100}, {3000, 24}, {2, 5000}};

at::Tensor Random(at::IntArrayRef shape, at::ScalarType dtype, uint64_t seed, double scale = 1.0) {
  at::manual_seed(seed);
  return (at::randn(shape, at::kDouble) * scale).to(dtype);
}

// A weight around 1, as trained norms are, with its own signs and magnitudes per column.
at::Tensor RandomWeight(int64_t hidden, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  return (1.0 + 0.5 * at::randn({hidden}, at::kDouble)).to(dtype);
}

// Hugging Face's LlamaRMSNorm.forward, as torch runs it in x's dtype.
at::Tensor HfRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

// d(sum(y * dy))/dx of the same formula by autograd in fp64: the exact gradient of the given
// (already rounded) inputs, which the op rounds once.
at::Tensor HfGradFp64(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& dy,
                      double eps) {
  const at::Tensor x64 = x.to(at::kDouble).requires_grad_(true);
  const at::Tensor y = HfRmsNorm(x64, weight.to(at::kDouble), eps);
  y.backward(dy.to(at::kDouble));
  return x64.grad();
}

// Distance in units in the last place between two fp16 or bf16 tensors of the same shape: the
// sign-magnitude bit patterns mapped onto a line of integers.
int64_t MaxUlpDistance(const at::Tensor& a, const at::Tensor& b) {
  auto ordered = [](const at::Tensor& t) {
    const at::Tensor bits = t.contiguous().view(at::kShort).to(at::kInt);
    const at::Tensor magnitude = bits.bitwise_and(0x7FFF);
    return at::where(bits < 0, -magnitude, magnitude);
  };
  return (ordered(a) - ordered(b)).abs().max().item<int64_t>();
}

double FractionEqual(const at::Tensor& a, const at::Tensor& b) {
  return a.eq(b).to(at::kDouble).mean().item<double>();
}

// |got - want| <= rtol * |want| + atol * max|want|, want in fp64; names the worst element.
void ExpectClose(const at::Tensor& got, const at::Tensor& want, double rtol, double atol,
                 const std::string& what) {
  const at::Tensor want64 = want.to(at::kDouble);
  const at::Tensor excess =
      (got.to(at::kDouble) - want64).abs() - rtol * want64.abs() - atol * want64.abs().max();
  const int64_t worst = excess.flatten().argmax().item<int64_t>();
  EXPECT_LE(excess.flatten()[worst].item<double>(), 0.0)
      << what << ": element " << worst << " is " << got.flatten()[worst].item<double>()
      << ", expected " << want64.flatten()[worst].item<double>();
}

using test_util::ExpectErrorContaining;

TEST(RmsNormOpsSchema, IsRegisteredWithCpuAndMetaKernels) {
  auto& dispatcher = c10::Dispatcher::singleton();
  for (const char* name :
       {"qlorad::rms_norm", "qlorad::add_rms_norm", "qlorad::rms_norm_backward"}) {
    auto op = dispatcher.findSchema({name, ""});
    ASSERT_TRUE(op.has_value()) << name;
    EXPECT_TRUE(op->hasKernelForDispatchKey(c10::DispatchKey::CPU)) << name;
    EXPECT_TRUE(op->hasKernelForDispatchKey(c10::DispatchKey::Meta)) << name;
    EXPECT_FALSE(op->schema().is_mutable()) << name;
  }
}

TEST(RmsNormOpsCpu, Fp32ForwardMatchesHuggingFace) {
  for (const auto& shape : kShapes) {
    const at::Tensor x = Random(shape, at::kFloat, 1, 3.0);
    const at::Tensor w = RandomWeight(shape.back(), at::kFloat, 2);
    const auto [y, inv_rms] = RmsNormForward(x, w, kEps);
    ASSERT_EQ(y.sizes(), x.sizes());
    ASSERT_EQ(y.scalar_type(), at::kFloat);
    ASSERT_EQ(inv_rms.sizes(), at::IntArrayRef({x.numel() / shape.back()}));
    ASSERT_EQ(inv_rms.scalar_type(), at::kFloat);
    const std::string what = "shape " + c10::str(x.sizes());
    ExpectClose(y, HfRmsNorm(x, w, kEps), 1e-5, 0, what + " y");
    const at::Tensor x64 = x.to(at::kDouble).reshape({-1, shape.back()});
    ExpectClose(inv_rms, at::rsqrt(x64.pow(2).mean(-1) + kEps), 1e-6, 0, what + " inv_rms");
  }
}

// Rows whose mean square is below eps: there eps, not the values, sets the scale.
TEST(RmsNormOpsCpu, EpsCountsForSmallRows) {
  const at::Tensor x = Random({3, 256}, at::kFloat, 19, 1e-3);
  const at::Tensor w = RandomWeight(256, at::kFloat, 20);
  const auto [y, inv_rms] = RmsNormForward(x, w, kEps);
  ExpectClose(y, HfRmsNorm(x, w, kEps), 1e-5, 0, "y");
  ExpectClose(inv_rms, at::rsqrt(x.to(at::kDouble).pow(2).mean(-1) + kEps), 1e-6, 0, "inv_rms");
}

// In fp16 and bf16, y is HF's bit for bit except where the fp32 value h * inv_rms lies within a
// few fp32 ulp of a rounding boundary: the row's sum is accumulated in another order than torch's
// (and inv_rms is 1 / sqrt where CUDA's torch.rsqrt is rsqrtf), so inv_rms may differ by an fp32
// ulp or two. There the normalized value rounds one ulp apart, which the weight multiply can turn
// into two ulp of y; that happens to about 1e-5 of the values.
TEST(RmsNormOpsCpu, HalfForwardIsHuggingFaceBitForBitAlmostEverywhere) {
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (const auto& shape : kShapes) {
      const at::Tensor x = Random(shape, dtype, 3, 3.0);
      const at::Tensor w = RandomWeight(shape.back(), dtype, 4);
      const auto [y, inv_rms] = RmsNormForward(x, w, kEps);
      ASSERT_EQ(y.scalar_type(), dtype);
      const at::Tensor want = HfRmsNorm(x, w, kEps);
      const std::string what = c10::toString(dtype) + std::string(" ") + c10::str(x.sizes());
      EXPECT_LE(MaxUlpDistance(y, want), 2) << what;
      EXPECT_GE(FractionEqual(y, want), 0.999) << what;
      const at::Tensor x64 = x.to(at::kDouble).reshape({-1, shape.back()});
      ExpectClose(inv_rms, at::rsqrt(x64.pow(2).mean(-1) + kEps), 1e-6, 0, what + " inv_rms");
    }
  }
}

TEST(RmsNormOpsCpu, BackwardMatchesAutogradInFp64) {
  // dx is computed in fp32 and rounded once: within fp32 noise in fp32, within half an ulp of
  // fp16/bf16 (2^-11, 2^-8 relative) elsewhere. atol covers fp32 noise where g - n * c cancels.
  const std::vector<std::tuple<at::ScalarType, double>> dtypes = {
      {at::kFloat, 1e-5}, {at::kHalf, 1.0 / 2048}, {at::kBFloat16, 1.0 / 256}};
  for (const auto& [dtype, rtol] : dtypes) {
    for (const auto& shape : kShapes) {
      const at::Tensor x = Random(shape, dtype, 5, 2.0);
      const at::Tensor w = RandomWeight(shape.back(), dtype, 6);
      const at::Tensor dy = Random(shape, dtype, 7);
      const at::Tensor inv_rms = std::get<1>(RmsNormForward(x, w, kEps));
      const at::Tensor dx = RmsNormBackward(dy, x, w, inv_rms, at::Tensor());
      ASSERT_EQ(dx.sizes(), x.sizes());
      ASSERT_EQ(dx.scalar_type(), dtype);
      const std::string what = c10::toString(dtype) + std::string(" ") + c10::str(x.sizes());
      ExpectClose(dx, HfGradFp64(x, w, dy, kEps), rtol, 1e-5, what + " dx");
    }
  }
}

TEST(RmsNormOpsCpu, BackwardAddsTheResidualGradientBeforeRounding) {
  const std::vector<std::tuple<at::ScalarType, double>> dtypes = {{at::kFloat, 1e-5},
                                                                  {at::kBFloat16, 1.0 / 256}};
  for (const auto& [dtype, rtol] : dtypes) {
    const at::Tensor x = Random({6, 4, 96}, dtype, 8, 2.0);
    const at::Tensor w = RandomWeight(96, dtype, 9);
    const at::Tensor dy = Random({6, 4, 96}, dtype, 10);
    const at::Tensor dresidual = Random({6, 4, 96}, dtype, 11);
    const at::Tensor dresidual_before = dresidual.clone();
    const at::Tensor inv_rms = std::get<1>(RmsNormForward(x, w, kEps));
    const at::Tensor dx = RmsNormBackward(dy, x, w, inv_rms, dresidual);
    EXPECT_TRUE(dresidual.equal(dresidual_before)) << "dresidual must not be written";
    const at::Tensor want = HfGradFp64(x, w, dy, kEps) + dresidual.to(at::kDouble);
    ExpectClose(dx, want, rtol, 1e-5, c10::toString(dtype) + std::string(" dx + dresidual"));
    // A zero residual gradient changes nothing: the sum happens in fp32, before the one rounding.
    EXPECT_TRUE(RmsNormBackward(dy, x, w, inv_rms, at::zeros_like(x))
                    .equal(RmsNormBackward(dy, x, w, inv_rms, at::Tensor())));
  }
}

TEST(RmsNormOpsCpu, AddFormReturnsTorchsSumAndNormalizesIt) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const auto& shape : kShapes) {
      const at::Tensor x = Random(shape, dtype, 12, 2.0);
      const at::Tensor residual = Random(shape, dtype, 13, 5.0);
      const at::Tensor w = RandomWeight(shape.back(), dtype, 14);
      const auto [h, y, inv_rms] = AddRmsNormForward(x, residual, w, kEps);
      const std::string what = c10::toString(dtype) + std::string(" ") + c10::str(x.sizes());
      EXPECT_TRUE(h.equal(x + residual)) << what << ": h is torch's add, bit for bit";
      const auto [y_of_h, inv_rms_of_h] = RmsNormForward(x + residual, w, kEps);
      EXPECT_TRUE(y.equal(y_of_h)) << what;
      EXPECT_TRUE(inv_rms.equal(inv_rms_of_h)) << what;
    }
  }
}

TEST(RmsNormOpsCpu, StridedLeadingDimensionsAndEmptyInputs) {
  const at::Tensor wide = Random({4, 128}, at::kBFloat16, 15);
  const at::Tensor x = wide.slice(/*dim=*/1, 0, 64);  // rows 128 apart, last dimension contiguous
  ASSERT_FALSE(x.is_contiguous());
  const at::Tensor w = RandomWeight(64, at::kBFloat16, 16);
  EXPECT_TRUE(std::get<0>(RmsNormForward(x, w, kEps))
                  .equal(std::get<0>(RmsNormForward(x.contiguous(), w, kEps))));

  // A gradient whose rows are spaced wider (the first columns of a wider matrix) is read in place
  // and gives what its contiguous copy gives; so does one whose rows are not evenly spaced
  // (copied).
  const auto [y_x, inv_x] = RmsNormForward(x, w, kEps);
  const at::Tensor dy_wide = Random({2, 2, 80}, at::kBFloat16, 17);
  const at::Tensor dy = dy_wide.narrow(2, 0, 64).reshape({4, 64});  // a view: rows 80 apart
  ASSERT_FALSE(dy.is_contiguous());
  EXPECT_TRUE(RmsNormBackward(dy, x, w, inv_x, at::Tensor())
                  .equal(RmsNormBackward(dy.contiguous(), x, w, inv_x, at::Tensor())));
  const at::Tensor x3 = x.contiguous().view({2, 2, 64});
  const at::Tensor uneven = Random({2, 3, 80}, at::kBFloat16, 18).narrow(1, 0, 2).narrow(2, 0, 64);
  EXPECT_TRUE(RmsNormBackward(uneven, x3, w, inv_x, at::Tensor())
                  .equal(RmsNormBackward(uneven.contiguous(), x3, w, inv_x, at::Tensor())));

  // Spare columns after each row of y (for the projection it feeds): the same values, in the first
  // columns of rows that much wider; h of the add form stays dense.
  for (int64_t spare : {3, 16}) {
    const auto [y_room, inv_room] = RmsNormForward(x, w, kEps, spare);
    EXPECT_EQ(y_room.sizes(), x.sizes());
    EXPECT_EQ(y_room.stride(0), 64 + spare);
    EXPECT_TRUE(y_room.equal(y_x) && inv_room.equal(inv_x)) << spare;
    const at::Tensor x3d = Random({2, 3, 64}, at::kBFloat16, 19);
    const auto [h, y3, inv3] = AddRmsNormForward(x3d, x3d, w, kEps, spare);
    const auto [h_dense, y3_dense, inv3_dense] = AddRmsNormForward(x3d, x3d, w, kEps);
    EXPECT_TRUE(h.is_contiguous() && h.equal(h_dense));
    EXPECT_EQ(y3.strides(), at::IntArrayRef({3 * (64 + spare), 64 + spare, 1}));
    EXPECT_TRUE(y3.equal(y3_dense) && inv3.equal(inv3_dense)) << spare;
  }

  const auto [y, inv_rms] = RmsNormForward(at::empty({0, 64}, at::kBFloat16), w, kEps);
  EXPECT_EQ(y.sizes(), at::IntArrayRef({0, 64}));
  EXPECT_EQ(inv_rms.sizes(), at::IntArrayRef({0}));
}

TEST(RmsNormOpsMeta, GivesShapesAndDtypes) {
  const auto meta = at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16);
  const at::Tensor x = at::empty({2, 3, 64}, meta);
  const at::Tensor w = at::empty({64}, meta);
  const auto [h, y, inv_rms] = AddRmsNormForward(x, x, w, kEps);
  EXPECT_TRUE(h.is_meta() && y.is_meta() && inv_rms.is_meta());
  EXPECT_EQ(h.sizes(), x.sizes());
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  EXPECT_EQ(inv_rms.sizes(), at::IntArrayRef({6}));
  EXPECT_EQ(inv_rms.scalar_type(), at::kFloat);
  const at::Tensor dx = RmsNormBackward(x, x, w, inv_rms, x);
  EXPECT_EQ(dx.sizes(), x.sizes());
  EXPECT_EQ(dx.scalar_type(), at::kBFloat16);
  // The checks are shared: Meta refuses what the devices refuse.
  ExpectErrorContaining([&] { RmsNormForward(x, at::empty({32}, meta), kEps); },
                        "qlorad::rms_norm: weight: expected shape [64], got [32]");
}

TEST(RmsNormOpsErrors, NameTheOpAndTheArgument) {
  const at::Tensor x = Random({4, 2048}, at::kBFloat16, 17);
  const at::Tensor w = RandomWeight(2048, at::kBFloat16, 18);
  const at::Tensor inv_rms = std::get<1>(RmsNormForward(x, w, kEps));
  ExpectErrorContaining([&] { RmsNormForward(x, RandomWeight(1024, at::kBFloat16, 0), kEps); },
                        "qlorad::rms_norm: weight: expected shape [2048], got [1024]");
  ExpectErrorContaining([&] { RmsNormForward(x, w.to(at::kFloat), kEps); },
                        "qlorad::rms_norm: weight: expected bfloat16 like x, got float32");
  ExpectErrorContaining([&] { RmsNormForward(x.t(), RandomWeight(4, at::kBFloat16, 0), kEps); },
                        "qlorad::rms_norm: x: expected the last dimension contiguous (stride 1), "
                        "got strides [1, 2048]");
  ExpectErrorContaining([&] { RmsNormForward(x.to(at::kInt), w, kEps); },
                        "qlorad::rms_norm: x: expected float32, float16 or bfloat16, got Int");
  ExpectErrorContaining([&] { RmsNormForward(x, w, -1.0); },
                        "qlorad::rms_norm: eps: expected a finite value >= 0");
  ExpectErrorContaining(
      [&] {
        RmsNormForward(at::empty({4, 0}, at::kFloat), w, kEps);
      },
      "qlorad::rms_norm: x: expected a non-empty last dimension, got shape "
      "[4, 0]");
  ExpectErrorContaining([&] { AddRmsNormForward(x, x.slice(1, 0, 2047), w, kEps); },
                        "qlorad::add_rms_norm: residual: expected shape [4, 2048] like x, got "
                        "[4, 2047]");
  ExpectErrorContaining([&] { AddRmsNormForward(x, x.to(at::kHalf), w, kEps); },
                        "qlorad::add_rms_norm: residual: expected bfloat16 like x, got float16");
  ExpectErrorContaining([&] { RmsNormBackward(x, x, w, inv_rms.slice(0, 0, 3), at::Tensor()); },
                        "qlorad::rms_norm_backward: inv_rms: expected shape [4], got [3]");
  ExpectErrorContaining([&] { RmsNormBackward(x, x, w, inv_rms.to(at::kBFloat16), at::Tensor()); },
                        "qlorad::rms_norm_backward: inv_rms: expected float32, got bfloat16");
  ExpectErrorContaining([&] { RmsNormBackward(x.to(at::kFloat), x, w, inv_rms, at::Tensor()); },
                        "qlorad::rms_norm_backward: dy: expected bfloat16 like x, got float32");
  ExpectErrorContaining(
      [&] {
        RmsNormBackward(x, x, w, inv_rms, x.reshape({2, 4096}));
      },
      "qlorad::rms_norm_backward: dresidual: expected shape [4, 2048] like x, "
      "got [2, 4096]");
  ExpectErrorContaining([&] { RmsNormForward(x, w, kEps, -1); },
                        "qlorad::rms_norm: spare_columns: expected >= 0, got -1");
}

}  // namespace
}  // namespace qlorad::ops
