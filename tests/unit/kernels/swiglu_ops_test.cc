// Tests of the fused SwiGLU torch ops (qlorad::swiglu, swiglu_backward, swiglu_backward_and_h) on
// CPU and Meta:
// the schemas, the C++ API of kernels/torch/swiglu_ops.h against torch's silu(gate) * up and its
// autograd in fp32, fp16 and bf16, column views of one [..., 2I] buffer, the layout of dgu, and
// the error messages.
#include "kernels/torch/swiglu_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "tests/unit/kernels/expect_error.h"

namespace qlorad::ops {
namespace {

using test_util::ExpectErrorContaining;

// Values over silu's whole useful range, both tails included.
at::Tensor Random(at::IntArrayRef shape, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  return (at::randn(shape) * 3.0).to(dtype);
}

// Within one unit in the last place of bf16 (2^-7 relative) or fp16 (2^-10); fp32 within 1e-5
// relative, as the last bits of exp (torch's vectorized one and the C library's) allow. `scale`
// (optional, per element) widens the bound where the result cancels: silu's derivative
// 1 + g (1 - s) vanishes near g = -1.28, where two fp32 evaluations differ by ulps of its terms,
// i.e. of |dh * up|, however small dgate itself is.
void ExpectWithinOneUlp(const at::Tensor& got, const at::Tensor& want, const std::string& what,
                        const at::Tensor& scale = at::Tensor()) {
  const at::ScalarType dtype = want.scalar_type();
  const double rel = dtype == at::kBFloat16 ? 1.0 / 128 : dtype == at::kHalf ? 1.0 / 1024 : 1e-5;
  const at::Tensor g = got.to(at::kFloat), w = want.to(at::kFloat);
  at::Tensor bound = at::maximum(g.abs(), w.abs());
  if (scale.defined()) bound = bound + scale.to(at::kFloat).abs();
  const at::Tensor excess = (g - w).abs() - rel * bound - 1e-30;
  EXPECT_LE(excess.max().item<float>(), 0.0f) << what;
}

// The share of bf16/fp16 elements that differ from torch at all: small, since only exp's last
// fp32 bit can differ. Skipping an intermediate rounding of torch's (silu to the dtype, dh * up to
// the dtype) moves far more values by one ulp. (In fp32 any exp difference shows: 0 there.)
double MismatchShare(const at::Tensor& got, const at::Tensor& want) {
  if (want.scalar_type() == at::kFloat) return 0.0;
  return got.ne(want).sum().item<double>() / static_cast<double>(want.numel());
}

TEST(SwigluOpsSchema, AreRegisteredWithCpuAndMetaKernels) {
  for (const char* name :
       {"qlorad::swiglu", "qlorad::swiglu_backward", "qlorad::swiglu_backward_and_h"}) {
    auto op = c10::Dispatcher::singleton().findSchema({name, ""});
    ASSERT_TRUE(op.has_value()) << name;
    EXPECT_TRUE(op->hasKernelForDispatchKey(c10::DispatchKey::CPU)) << name;
    EXPECT_TRUE(op->hasKernelForDispatchKey(c10::DispatchKey::Meta)) << name;
    EXPECT_FALSE(op->schema().is_mutable()) << name;
  }
}

TEST(SwigluOpsCpu, ForwardMatchesSiluTimesUp) {
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const at::Tensor gate = Random({64, 96}, dtype, 1);
    const at::Tensor up = Random({64, 96}, dtype, 2);
    const at::Tensor want = at::silu(gate) * up;
    const at::Tensor h = SwigluForward(gate, up);
    ASSERT_EQ(h.sizes(), want.sizes());
    ASSERT_EQ(h.scalar_type(), dtype);
    ExpectWithinOneUlp(h, want, c10::toString(dtype));
    EXPECT_LT(MismatchShare(h, want), 0.01) << dtype;
  }
}

TEST(SwigluOpsCpu, ForwardReadsColumnViewsAndKeepsLeadingDims) {
  const int64_t inter = 40;
  const at::Tensor gu = Random({2, 3, 2 * inter}, at::kBFloat16, 3);  // one fused GEMM output
  const at::Tensor gate = gu.narrow(-1, 0, inter), up = gu.narrow(-1, inter, inter);
  const at::Tensor h = SwigluForward(gate, up);
  EXPECT_EQ(h.sizes(), (std::vector<int64_t>{2, 3, inter}));
  EXPECT_TRUE(h.is_contiguous());
  EXPECT_TRUE(at::equal(h, SwigluForward(gate.contiguous(), up.contiguous())));
  ExpectWithinOneUlp(h, at::silu(gate) * up, "views");
}

// spare_columns: h is the first I columns of rows I + spare apart, the same values as without;
// the spare columns are left as they were (the down projection writes x A^T there).
TEST(SwigluOpsCpu, ForwardLeavesSpareColumnsAfterEachRow) {
  const int64_t inter = 40, spare = 8;
  const at::Tensor gu = Random({2, 3, 2 * inter}, at::kBFloat16, 12);
  const at::Tensor gate = gu.narrow(-1, 0, inter), up = gu.narrow(-1, inter, inter);
  const at::Tensor h = SwigluForward(gate, up, spare);
  EXPECT_EQ(h.sizes(), (std::vector<int64_t>{2, 3, inter}));
  EXPECT_EQ(h.strides(), (std::vector<int64_t>{3 * (inter + spare), inter + spare, 1}));
  EXPECT_EQ(static_cast<int64_t>(h.storage().nbytes()), 6 * (inter + spare) * 2);
  EXPECT_TRUE(at::equal(h, SwigluForward(gate, up)));
  // As a [rows, I] view with its room, what FusedProjection::HasRoom looks for.
  const at::Tensor rows = h.reshape({-1, inter});
  EXPECT_EQ(rows.stride(0), inter + spare);
  EXPECT_EQ(rows.data_ptr(), h.data_ptr());
}

TEST(SwigluOpsCpu, BackwardMatchesAutogradOfSiluTimesUp) {
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const int64_t inter = 96;
    const at::Tensor gate = Random({2, 32, inter}, dtype, 4).requires_grad_(true);
    const at::Tensor up = Random({2, 32, inter}, dtype, 5).requires_grad_(true);
    const at::Tensor dh = Random({2, 32, inter}, dtype, 6);
    (at::silu(gate) * up).backward(dh);
    const at::Tensor dgu = SwigluBackward(dh, gate.detach(), up.detach());
    ASSERT_EQ(dgu.sizes(), (std::vector<int64_t>{2, 32, 2 * inter}));
    ASSERT_TRUE(dgu.is_contiguous());
    const at::Tensor dgate = dgu.narrow(-1, 0, inter), dup = dgu.narrow(-1, inter, inter);
    ExpectWithinOneUlp(dgate, gate.grad(), std::string("dgate ") + c10::toString(dtype),
                       dh.to(at::kFloat) * up.detach().to(at::kFloat));
    ExpectWithinOneUlp(dup, up.grad(), std::string("dup ") + c10::toString(dtype));
    EXPECT_LT(MismatchShare(dgate, gate.grad()), 0.01) << dtype;
    EXPECT_LT(MismatchShare(dup, up.grad()), 0.01) << dtype;
  }
}

TEST(SwigluOpsCpu, BackwardReadsColumnViews) {
  const int64_t inter = 24;
  const at::Tensor gu = Random({16, 2 * inter}, at::kFloat, 7);
  const at::Tensor dh = Random({16, 2 * inter}, at::kFloat, 8).narrow(-1, 0, inter);
  const at::Tensor gate = gu.narrow(-1, 0, inter), up = gu.narrow(-1, inter, inter);
  const at::Tensor dgu = SwigluBackward(dh, gate, up);
  EXPECT_TRUE(at::equal(dgu, SwigluBackward(dh.contiguous(), gate.contiguous(), up.contiguous())));
}

// The backward that also writes h gives, bit for bit, what the two ops give apart: the trainer's
// MLP backward takes h from it instead of a forward pass of its own. Column views of one [..., 2I]
// buffer, as the trainer passes them.
TEST(SwigluOpsCpu, BackwardAndHEqualsBackwardAndForward) {
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const int64_t inter = 72;
    const at::Tensor gu = Random({3, 20, 2 * inter}, dtype, 12);
    const at::Tensor gate = gu.narrow(-1, 0, inter), up = gu.narrow(-1, inter, inter);
    const at::Tensor dh = Random({3, 20, inter}, dtype, 13);
    const auto [dgu, h] = SwigluBackwardAndH(dh, gate, up);
    EXPECT_TRUE(at::equal(dgu, SwigluBackward(dh, gate, up))) << dtype;
    EXPECT_TRUE(at::equal(h, SwigluForward(gate, up))) << dtype;
    EXPECT_TRUE(h.is_contiguous());
    EXPECT_EQ(h.sizes(), gate.sizes());
  }
}

// Large |gate| (exp overflowing to inf) gives torch's limits, not NaN.
TEST(SwigluOpsCpu, SaturatesLikeTorch) {
  const at::Tensor gate = at::tensor({-200.0f, -90.0f, 0.0f, 90.0f, 200.0f});
  const at::Tensor up = at::full({5}, 2.0f);
  const at::Tensor dh = at::ones({5});
  EXPECT_TRUE(at::allclose(SwigluForward(gate, up), at::silu(gate) * up));
  const at::Tensor dgu = SwigluBackward(dh, gate, up);
  EXPECT_FALSE(dgu.isnan().any().item<bool>());
  EXPECT_TRUE(at::allclose(dgu.narrow(0, 0, 5), at::silu_backward(dh * up, gate)));
}

TEST(SwigluOpsMeta, GiveShapesAndDtypes) {
  const auto meta = at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16);
  const at::Tensor gate = at::empty({4, 8, 16}, meta);
  const at::Tensor h = SwigluForward(gate, gate);
  EXPECT_EQ(h.sizes(), (std::vector<int64_t>{4, 8, 16}));
  EXPECT_TRUE(h.is_meta());
  const at::Tensor dgu = SwigluBackward(gate, gate, gate);
  EXPECT_EQ(dgu.sizes(), (std::vector<int64_t>{4, 8, 32}));
  EXPECT_EQ(dgu.scalar_type(), at::kBFloat16);
  const auto [dgu2, h2] = SwigluBackwardAndH(gate, gate, gate);
  EXPECT_EQ(dgu2.sizes(), (std::vector<int64_t>{4, 8, 32}));
  EXPECT_EQ(h2.sizes(), (std::vector<int64_t>{4, 8, 16}));
  EXPECT_TRUE(h2.is_meta());
  const at::Tensor roomy = SwigluForward(gate, gate, 8);
  EXPECT_EQ(roomy.sizes(), (std::vector<int64_t>{4, 8, 16}));
  EXPECT_EQ(roomy.stride(1), 24);
}

TEST(SwigluOpsErrors, NameTheOpAndTheArgument) {
  const at::Tensor g = Random({4, 8}, at::kBFloat16, 9);
  ExpectErrorContaining([&] { SwigluForward(g, g.to(at::kFloat)); },
                        "qlorad::swiglu: up: expected bfloat16 like gate, got float32");
  ExpectErrorContaining([&] { SwigluForward(g, g.narrow(1, 0, 6)); },
                        "qlorad::swiglu: up: expected shape [4, 8] like gate, got [4, 6]");
  ExpectErrorContaining([&] { SwigluForward(g.to(at::kDouble), g.to(at::kDouble)); },
                        "qlorad::swiglu: gate: expected float32, float16 or bfloat16, got float64");
  const at::Tensor square = Random({8, 8}, at::kBFloat16, 10);
  ExpectErrorContaining([&] { SwigluForward(square.t(), square); },
                        "qlorad::swiglu: gate: expected the last dim contiguous");
  const at::Tensor three = Random({2, 4, 8}, at::kBFloat16, 11).narrow(1, 0, 3);
  ExpectErrorContaining([&] { SwigluForward(three, three.contiguous()); },
                        "qlorad::swiglu: gate: expected rows at one stride");
  ExpectErrorContaining([&] { SwigluBackward(g.narrow(1, 0, 4), g, g); },
                        "qlorad::swiglu_backward: dh: expected shape [4, 8] like gate");
  ExpectErrorContaining([&] { SwigluBackward(g, g, at::Tensor()); },
                        "qlorad::swiglu_backward: up: expected a tensor, got None");
  ExpectErrorContaining([&] { SwigluBackwardAndH(g, g, g.narrow(1, 0, 4)); },
                        "qlorad::swiglu_backward_and_h: up: expected shape [4, 8] like gate");
  ExpectErrorContaining([&] { SwigluForward(g, g, -1); },
                        "qlorad::swiglu: spare_columns: expected >= 0, got -1");
}

}  // namespace
}  // namespace qlorad::ops
