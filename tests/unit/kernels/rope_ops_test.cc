// Tests of the fused RoPE torch op (qlorad::rope_) on CPU and Meta: the schema, the C++ API of
// kernels/torch/rope_ops.h against the trainer's unfused rotation (x * cos + rotate_half(x) * sin
// in fp32, rounded once) with and without positions, strided q/k views of one fused qkv buffer,
// the inverse as the forward's undo and as its autograd backward, and the error messages.
#include "kernels/torch/rope_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "tests/unit/kernels/expect_error.h"

namespace qlorad::ops {
namespace {

using test_util::ExpectErrorContaining;

at::Tensor Random(at::IntArrayRef shape, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  return at::randn(shape).to(dtype);
}

// Hugging Face's tables (RotaryCosSin in the trainer): the half-size frequencies repeated twice.
std::pair<at::Tensor, at::Tensor> HfTable(int64_t rows, int64_t d) {
  const at::Tensor inv_freq = 1.0 / at::pow(10000.0, at::arange(0, d, 2, at::kFloat) / d);
  const at::Tensor freqs = at::outer(at::arange(rows, at::kFloat), inv_freq);
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

// Tables whose two halves differ: a kernel that reads column i where it should read i + d/2 fails.
std::pair<at::Tensor, at::Tensor> RandomTable(int64_t rows, int64_t d, uint64_t seed) {
  return {Random({rows, d}, at::kFloat, seed), Random({rows, d}, at::kFloat, seed + 1)};
}

// The trainer's rotation (ApplyRotary in worker/trainer/model/llama_model.cc) on [b, s, h, d].
at::Tensor TorchRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& positions) {
  const int64_t b = x.size(0), s = x.size(1), d = x.size(3), half = d / 2;
  at::Tensor c, sn;
  if (positions.defined()) {
    c = cos.index_select(0, positions.flatten()).view({b, s, 1, d});
    sn = sin.index_select(0, positions.flatten()).view({b, s, 1, d});
  } else {
    c = cos.narrow(0, 0, s).view({1, s, 1, d});
    sn = sin.narrow(0, 0, s).view({1, s, 1, d});
  }
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor rotated = at::cat({-x32.narrow(-1, half, half), x32.narrow(-1, 0, half)}, -1);
  return (x32 * c + rotated * sn).to(x.scalar_type());
}

// Two packed rows of 8 tokens: documents of 3, 4 and 1 tokens, then of 5 and 3.
at::Tensor PackedPositions() {
  return at::tensor({0, 1, 2, 0, 1, 2, 3, 0, 0, 1, 2, 3, 4, 0, 1, 2}, at::kLong).view({2, 8});
}

// q, k and v as column slices of one [batch, seq, (Hq + 2 Hkv) * d] projection output.
struct FusedQkv {
  at::Tensor buffer, q, k, v;
};

FusedQkv MakeFusedQkv(int64_t b, int64_t s, int64_t hq, int64_t hkv, int64_t d,
                      at::ScalarType dtype, uint64_t seed) {
  FusedQkv f;
  f.buffer = Random({b, s, (hq + 2 * hkv) * d}, dtype, seed);
  f.q = f.buffer.narrow(2, 0, hq * d).unflatten(2, {hq, d});
  f.k = f.buffer.narrow(2, hq * d, hkv * d).unflatten(2, {hkv, d});
  f.v = f.buffer.narrow(2, (hq + hkv) * d, hkv * d).unflatten(2, {hkv, d});
  return f;
}

// `name` has CPU and Meta kernels, returns nothing and mutates exactly the arguments `mutated`.
void ExpectMutatingOp(const char* name, const std::vector<size_t>& mutated) {
  auto op = c10::Dispatcher::singleton().findSchema({name, ""});
  ASSERT_TRUE(op.has_value()) << name;
  EXPECT_TRUE(op->hasKernelForDispatchKey(c10::DispatchKey::CPU)) << name;
  EXPECT_TRUE(op->hasKernelForDispatchKey(c10::DispatchKey::Meta)) << name;
  const c10::FunctionSchema& schema = op->schema();
  for (size_t i = 0; i < schema.arguments().size(); ++i) {
    const bool expected = std::find(mutated.begin(), mutated.end(), i) != mutated.end();
    EXPECT_EQ(schema.is_mutable({c10::SchemaArgType::input, i}), expected)
        << name << " argument " << schema.arguments()[i].name();
  }
  EXPECT_TRUE(schema.returns().empty()) << name;
}

TEST(RopeOpsSchema, IsRegisteredAsAMutatingOpWithCpuAndMetaKernels) {
  ExpectMutatingOp("qlorad::rope_", {0, 1});  // q, k
}

// Both sides round each fp32 product and the sum separately and then once to the dtype, so they
// agree bit for bit, in every dtype.
TEST(RopeOpsCpu, MatchesTheTrainersRotationBitForBit) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (bool with_positions : {false, true}) {
      const auto [cos, sin] = RandomTable(9, 16, 1);
      const at::Tensor positions = with_positions ? PackedPositions() : at::Tensor();
      at::Tensor q = Random({2, 8, 4, 16}, dtype, 2);
      at::Tensor k = Random({2, 8, 2, 16}, dtype, 3);
      const at::Tensor q_want = TorchRope(q, cos, sin, positions);
      const at::Tensor k_want = TorchRope(k, cos, sin, positions);
      RopeInPlace(q, k, cos, sin, positions, /*inverse=*/false);
      EXPECT_TRUE(at::equal(q, q_want)) << dtype << " positions " << with_positions;
      EXPECT_TRUE(at::equal(k, k_want)) << dtype << " positions " << with_positions;
    }
  }
}

TEST(RopeOpsCpu, PositionsPickTheTableRowOfEachToken) {
  const auto [cos, sin] = RandomTable(8, 8, 4);
  const at::Tensor x = Random({2, 8, 3, 8}, at::kFloat, 5);
  // Explicit row s for every token is the same as no positions.
  at::Tensor q1 = x.clone(), k1 = x.clone(), q2 = x.clone(), k2 = x.clone();
  RopeInPlace(q1, k1, cos, sin, at::arange(8, at::kLong).repeat({2, 1}), false);
  RopeInPlace(q2, k2, cos, sin, at::Tensor(), false);
  EXPECT_TRUE(at::equal(q1, q2));
  // A document restarting at 0 rotates its first token like the row's first token.
  at::Tensor same = x.select(1, 0).unsqueeze(1).expand({2, 8, 3, 8}).contiguous();
  at::Tensor k3 = same.clone();
  RopeInPlace(same, k3, cos, sin, PackedPositions(), false);
  EXPECT_TRUE(at::equal(same[0][3], same[0][0]));   // positions[0, 3] == 0
  EXPECT_FALSE(at::equal(same[0][2], same[0][0]));  // positions[0, 2] == 2
  EXPECT_TRUE(at::equal(same[1][5], same[1][0]));   // positions[1, 5] == 0
}

TEST(RopeOpsCpu, RotatesStridedViewsOfOneFusedBufferInPlace) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const auto [cos, sin] = RandomTable(8, 16, 6);
    FusedQkv f = MakeFusedQkv(2, 8, 4, 2, 16, dtype, 7);
    ASSERT_FALSE(f.q.is_contiguous());
    const at::Tensor q_want = TorchRope(f.q, cos, sin, PackedPositions());
    const at::Tensor k_want = TorchRope(f.k, cos, sin, PackedPositions());
    const at::Tensor v_before = f.v.clone();
    RopeInPlace(f.q, f.k, cos, sin, PackedPositions(), false);
    EXPECT_TRUE(at::equal(f.q, q_want)) << dtype;
    EXPECT_TRUE(at::equal(f.k, k_want)) << dtype;
    EXPECT_TRUE(at::equal(f.v, v_before)) << dtype;  // v's columns are not touched
  }
  // Tokens in [seq, batch] order (a transposed view) work the same way.
  const auto [cos, sin] = RandomTable(8, 8, 8);
  at::Tensor q = Random({8, 2, 2, 8}, at::kFloat, 9).transpose(0, 1);
  at::Tensor k = Random({8, 2, 1, 8}, at::kFloat, 10).transpose(0, 1);
  const at::Tensor q_want = TorchRope(q, cos, sin, at::Tensor());
  RopeInPlace(q, k, cos, sin, at::Tensor(), false);
  EXPECT_TRUE(at::equal(q, q_want));
}

TEST(RopeOpsCpu, InverseUndoesTheForwardWithHuggingFaceTables) {
  const auto [cos, sin] = HfTable(64, 16);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
    const at::Tensor q0 = Random({2, 8, 4, 16}, dtype, 11);
    const at::Tensor k0 = Random({2, 8, 2, 16}, dtype, 12);
    at::Tensor q = q0.clone(), k = k0.clone();
    const at::Tensor positions = PackedPositions() * 7;  // rows up to 28: larger angles
    RopeInPlace(q, k, cos, sin, positions, false);
    EXPECT_FALSE(at::allclose(q, q0, tol, tol));  // the forward did rotate
    RopeInPlace(q, k, cos, sin, positions, /*inverse=*/true);
    // Undone up to two roundings, which scale with the pair's size rather than each element's.
    const double atol = tol * q0.abs().max().item<double>();
    EXPECT_TRUE(at::allclose(q.to(at::kFloat), q0.to(at::kFloat), tol, atol)) << dtype;
    EXPECT_TRUE(at::allclose(k.to(at::kFloat), k0.to(at::kFloat), tol, atol)) << dtype;
  }
}

// The inverse is the transpose of the forward map, so for any table (here one whose halves
// differ) it is exactly what autograd gives as the forward's backward.
TEST(RopeOpsCpu, InverseIsTheAutogradBackwardOfTheForward) {
  const auto [cos, sin] = RandomTable(9, 16, 13);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
    const at::Tensor x = Random({2, 8, 3, 16}, dtype, 14).requires_grad_(true);
    const at::Tensor dy = Random({2, 8, 3, 16}, dtype, 15);
    TorchRope(x, cos, sin, PackedPositions()).backward(dy);
    at::Tensor dq = dy.clone(), dk = dy.clone();
    RopeInPlace(dq, dk, cos, sin, PackedPositions(), /*inverse=*/true);
    EXPECT_TRUE(at::allclose(dq.to(at::kFloat), x.grad().to(at::kFloat), tol, tol)) << dtype;
  }
}

TEST(RopeOpsMeta, ChecksLikeTheOtherDevicesWithoutData) {
  const auto meta = at::TensorOptions().device(at::kMeta);
  at::Tensor q = at::empty({2, 8, 4, 16}, meta.dtype(at::kBFloat16));
  at::Tensor k = at::empty({2, 8, 2, 16}, meta.dtype(at::kBFloat16));
  const at::Tensor cos = at::empty({8, 16}, meta.dtype(at::kFloat));
  RopeInPlace(q, k, cos, cos, at::Tensor(), false);
  ExpectErrorContaining([&] { RopeInPlace(q, k, cos.to(at::kBFloat16), cos, at::Tensor(), false); },
                        "qlorad::rope_: cos: expected float32, got bfloat16");
}

TEST(RopeOpsErrors, NameTheOpAndTheArgument) {
  const auto [cos, sin] = RandomTable(8, 8, 16);
  at::Tensor q = Random({2, 4, 2, 8}, at::kBFloat16, 17);
  at::Tensor k = Random({2, 4, 1, 8}, at::kBFloat16, 18);
  const at::Tensor none;
  auto expect = [&](at::Tensor qq, at::Tensor kk, const at::Tensor& c, const at::Tensor& s,
                    const at::Tensor& pos, const std::string& needle) {
    ExpectErrorContaining([&] { RopeInPlace(qq, kk, c, s, pos, false); }, needle);
  };
  expect(q, k, cos.to(at::kBFloat16), sin, none,
         "qlorad::rope_: cos: expected float32, got bfloat16");
  expect(q, k, cos, sin.narrow(0, 0, 6), none, "qlorad::rope_: sin: expected [8, 8] like cos");
  expect(q.to(at::kFloat), k, cos, sin, none, "qlorad::rope_: k: expected float32 like q");
  expect(q.to(at::kDouble), k.to(at::kDouble), cos, sin, none,
         "qlorad::rope_: q: expected float32, float16 or bfloat16, got float64");
  expect(q.narrow(3, 0, 7), k.narrow(3, 0, 7), cos.narrow(1, 0, 7).contiguous(),
         sin.narrow(1, 0, 7).contiguous(), none,
         "qlorad::rope_: q: head_dim: expected an even number, got 7");
  expect(q.select(2, 0), k, cos, sin, none,
         "qlorad::rope_: q: expected [batch, seq, heads, head_dim], got [2, 4, 8]");
  expect(q.transpose(1, 2), k, cos, sin, none,
         "qlorad::rope_: q: expected heads and head_dim contiguous");
  expect(q.select(0, 0).unsqueeze(0).expand({2, 4, 2, 8}), k, cos, sin, none,
         "qlorad::rope_: q: expected tokens that do not overlap in memory");
  expect(q, q, cos, sin, none, "qlorad::rope_: q and k: expected separate memory");
  expect(q, k.narrow(1, 0, 3), cos, sin, none, "qlorad::rope_: k: expected [2, 4, kv_heads, 8]");
  expect(q, k, cos.narrow(1, 0, 4), sin, none, "qlorad::rope_: cos: expected [table_rows, 8]");
  expect(q, k, cos.narrow(0, 0, 3), sin.narrow(0, 0, 3), none,
         "qlorad::rope_: cos: expected at least 4 rows");
  expect(q, k, cos, sin, at::zeros({2, 4}, at::kFloat),
         "qlorad::rope_: positions: expected int64, got float32");
  expect(q, k, cos, sin, at::zeros({2, 3}, at::kLong), "qlorad::rope_: positions: expected [2, 4]");
  // On CPU a position outside the table is reported by token, before anything is rotated.
  at::Tensor positions = at::zeros({2, 4}, at::kLong);
  positions[1][2] = 8;
  const at::Tensor q_before = q.clone();
  expect(q, k, cos, sin, positions, "qlorad::rope_: positions[1, 2] = 8 is outside the table's");
  EXPECT_TRUE(at::equal(q, q_before));
  positions[1][2] = -1;
  expect(q, k, cos, sin, positions, "qlorad::rope_: positions[1, 2] = -1 is outside");
  expect(none, k, cos, sin, none, "qlorad::rope_: q: expected a tensor, got None");
}

TEST(RopeIntoSchema, WritesOnlyItsOutputs) {
  ExpectMutatingOp("qlorad::rope_into", {6, 7});  // q_out, k_out
}

// The attention backward's case: gradients laid out [batch, heads, seq, d] by the kernel (so heads
// are not side by side), rotated back into their heads of one fused q|k|v gradient. The same bits
// as copying them there and rotating in place, forward and inverse, with and without positions;
// the sources and v's columns are left as they were.
TEST(RopeIntoCpu, EqualsACopyRotatedInPlaceFromAnyLayout) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (bool inverse : {false, true}) {
      for (bool with_positions : {false, true}) {
        const auto [cos, sin] = RandomTable(9, 16, 20);
        const at::Tensor positions = with_positions ? PackedPositions() : at::Tensor();
        const at::Tensor dq = Random({2, 4, 8, 16}, dtype, 21).transpose(1, 2);
        const at::Tensor dk = Random({2, 2, 8, 16}, dtype, 22).transpose(1, 2);
        ASSERT_NE(dq.stride(2), 16);
        const at::Tensor dq_before = dq.clone(), dk_before = dk.clone();
        FusedQkv want = MakeFusedQkv(2, 8, 4, 2, 16, dtype, 23);
        FusedQkv got = MakeFusedQkv(2, 8, 4, 2, 16, dtype, 23);
        want.q.copy_(dq);
        want.k.copy_(dk);
        RopeInPlace(want.q, want.k, cos, sin, positions, inverse);
        RopeInto(dq, dk, cos, sin, positions, inverse, got.q, got.k);
        const std::string what = std::string(c10::toString(dtype)) + " inverse " +
                                 std::to_string(inverse) + " positions " +
                                 std::to_string(with_positions);
        EXPECT_TRUE(at::equal(got.buffer, want.buffer)) << what;
        EXPECT_TRUE(at::equal(dq, dq_before) && at::equal(dk, dk_before)) << what;
      }
    }
  }
}

TEST(RopeIntoErrors, NameTheOpAndTheArgument) {
  const auto [cos, sin] = RandomTable(8, 8, 24);
  const at::Tensor q = Random({2, 4, 2, 8}, at::kBFloat16, 25);
  const at::Tensor k = Random({2, 4, 1, 8}, at::kBFloat16, 26);
  const at::Tensor none;
  auto expect = [&](const at::Tensor& qq, const at::Tensor& kk, at::Tensor q_out, at::Tensor k_out,
                    const at::Tensor& c, const std::string& needle) {
    ExpectErrorContaining([&] { RopeInto(qq, kk, c, sin, none, true, q_out, k_out); }, needle);
  };
  at::Tensor q_out = at::empty_like(q), k_out = at::empty_like(k);
  expect(q, k, q_out, k_out, cos.to(at::kBFloat16),
         "qlorad::rope_into: cos: expected float32, got bfloat16");
  expect(q.narrow(1, 0, 3), k, q_out, k_out, cos,
         "qlorad::rope_into: q: expected [2, 4, 2, 8] like q_out, got [2, 3, 2, 8]");
  expect(q, k.to(at::kFloat), q_out, k_out, cos,
         "qlorad::rope_into: k: expected bfloat16 like k_out, got float32");
  expect(q.transpose(2, 3).contiguous().transpose(2, 3), k, q_out, k_out, cos,
         "qlorad::rope_into: q: expected head_dim contiguous");
  expect(q, k, q_out.transpose(1, 2).contiguous().transpose(1, 2), k_out, cos,
         "qlorad::rope_into: q_out: expected heads and head_dim contiguous");
  expect(q, k, q, k_out, cos, "qlorad::rope_into: q_out and k_out: expected memory apart from");
  // Heads of one buffer whose columns overlap: neither view is dense, so only the spans tell.
  const at::Tensor buffer = Random({2, 4, 4 * 8}, at::kBFloat16, 27);
  expect(buffer.narrow(2, 8, 16).unflatten(2, {2, 8}), k,
         buffer.narrow(2, 0, 16).unflatten(2, {2, 8}), k_out, cos,
         "qlorad::rope_into: q_out and k_out: expected memory apart from");
  expect(q, k, q_out, k_out.to(at::kFloat), cos,
         "qlorad::rope_into: k: expected float32 like k_out, got bfloat16");
  expect(q, k.to(at::kFloat), q_out, k_out.to(at::kFloat), cos,
         "qlorad::rope_into: k_out: expected bfloat16 like q_out, got float32");
  expect(none, k, q_out, k_out, cos, "qlorad::rope_into: q: expected a tensor, got None");
  // On the Meta device: the same checks without data.
  const auto meta = at::TensorOptions().device(at::kMeta);
  at::Tensor mq = at::empty({2, 4, 2, 8}, meta.dtype(at::kBFloat16));
  at::Tensor mk = at::empty({2, 4, 1, 8}, meta.dtype(at::kBFloat16));
  const at::Tensor mcos = at::empty({8, 8}, meta.dtype(at::kFloat));
  RopeInto(at::empty_like(mq), at::empty_like(mk), mcos, mcos, none, true, mq, mk);
  ExpectErrorContaining([&] { RopeInto(at::empty_like(mq), mk, mcos, mcos, none, true, mq, mk); },
                        "qlorad::rope_into: q_out and k_out: expected memory apart from");
}

}  // namespace
}  // namespace qlorad::ops
