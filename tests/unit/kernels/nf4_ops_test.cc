// Tests of the qlorad NF4 torch ops on CPU and Meta: the schemas in the dispatcher, the C++ API of
// kernels/torch/nf4_ops.h against the torch-free reference and against torch's own fp16/bf16
// rounding, the out= form, shapes under Meta, the error messages, and the dtype-to-format mapping
// every op shares.
#include "kernels/torch/nf4_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "kernels/nf4_dynamic_map.h"
#include "kernels/nf4_ref.h"
#include "kernels/torch/float_format.h"
#include "tests/unit/kernels/expect_error.h"

namespace qlorad::ops {
namespace {

using test_util::ExpectErrorContaining;

namespace ref = kernels::ref;

at::Tensor RandomWeight(std::vector<int64_t> shape, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  return (at::randn(shape) * 0.02).to(dtype);
}

TEST(NF4OpsSchema, IsRegisteredWithCpuAndMetaKernels) {
  auto& dispatcher = c10::Dispatcher::singleton();
  // The out= form has a kernel per backend; the functional and grouped forms are built on it once
  // (CompositeExplicitAutograd), and CUDA adds its grouped launch.
  for (const auto& [name, overload, key] :
       {std::tuple{"qlorad::nf4_dequantize", "out", c10::DispatchKey::CPU},
        std::tuple{"qlorad::nf4_dequantize", "out", c10::DispatchKey::Meta},
        std::tuple{"qlorad::nf4_dequantize", "", c10::DispatchKey::CompositeExplicitAutograd},
        std::tuple{"qlorad::nf4_dequantize_many", "out",
                   c10::DispatchKey::CompositeExplicitAutograd}}) {
    auto op = dispatcher.findSchema({name, overload});
    ASSERT_TRUE(op.has_value()) << name << "." << overload;
    EXPECT_TRUE(op->hasKernelForDispatchKey(key)) << name << "." << overload << " " << key;
  }
  auto quantize = dispatcher.findSchema({"qlorad::nf4_quantize", ""});
  ASSERT_TRUE(quantize.has_value());
  EXPECT_TRUE(quantize->hasKernelForDispatchKey(c10::DispatchKey::CPU));
  EXPECT_TRUE(quantize->hasKernelForDispatchKey(c10::DispatchKey::Meta));
  const auto& out_schema = dispatcher.findSchema({"qlorad::nf4_dequantize", "out"})->schema();
  EXPECT_TRUE(out_schema.is_mutable());
  EXPECT_TRUE(out_schema.returns().empty());  // see nf4_ops.cc: compile-friendly
}

TEST(NF4OpsCpu, QuantizeMatchesTheReferenceByteForByte) {
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const at::Tensor w =
        RandomWeight({37, 65}, dtype, 1);  // 2405 elements: odd, partial last block
    const NF4Weight q = QuantizeNF4(w, 64, /*double_quant=*/true);
    ASSERT_EQ(q.numel(), 2405);
    ASSERT_EQ(q.shape, (std::vector<int64_t>{37, 65}));
    ASSERT_EQ(q.dtype, dtype);

    const at::Tensor wf = w.to(at::kFloat).contiguous();
    std::vector<uint8_t> packed(ref::PackedBytes(2405));
    std::vector<float> absmax(ref::NumBlocks(2405, 64));
    ASSERT_TRUE(
        ref::QuantizeNF4(wf.data_ptr<float>(), 2405, 64, packed.data(), absmax.data()).ok());
    ASSERT_EQ(q.packed.numel(), static_cast<int64_t>(packed.size()));
    EXPECT_EQ(std::memcmp(q.packed.data_ptr<uint8_t>(), packed.data(), packed.size()), 0);

    const float offset =
        at::from_blob(absmax.data(), {static_cast<int64_t>(absmax.size())}).mean().item<float>();
    EXPECT_EQ(q.offset.item<float>(), offset);
    EXPECT_EQ(q.offset.dim(), 0);
    std::vector<uint8_t> codes(absmax.size());
    std::vector<float> nested(1);
    ref::DoubleQuantizeAbsmax(absmax.data(), static_cast<int64_t>(absmax.size()), offset,
                              kernels::kDynamicMapSigned, codes.data(), nested.data());
    ASSERT_EQ(q.absmax.scalar_type(), at::kByte);
    EXPECT_EQ(std::memcmp(q.absmax.data_ptr<uint8_t>(), codes.data(), codes.size()), 0);
    EXPECT_EQ(q.nested_absmax.item<float>(), nested[0]);
    EXPECT_TRUE(at::equal(q.nested_code,
                          at::from_blob(const_cast<float*>(kernels::kDynamicMapSigned), {256})));
  }
}

TEST(NF4OpsCpu, WithoutDoubleQuantAbsmaxIsFp32AndNestedTensorsUndefined) {
  const at::Tensor w = RandomWeight({130}, at::kBFloat16, 2);
  const NF4Weight q = QuantizeNF4(w, 64, /*double_quant=*/false);
  EXPECT_EQ(q.absmax.scalar_type(), at::kFloat);
  EXPECT_EQ(q.absmax.numel(), 3);
  EXPECT_FALSE(q.nested_absmax.defined());
  EXPECT_FALSE(q.offset.defined());
  EXPECT_EQ(q.absmax[2].item<float>(), w.slice(0, 128).abs().max().to(at::kFloat).item<float>());
}

TEST(NF4OpsCpu, DequantizeMatchesTheReferenceAndTorchsRounding) {
  for (bool double_quant : {true, false}) {
    const NF4Weight q = QuantizeNF4(RandomWeight({64, 129}, at::kBFloat16, 3), 64, double_quant);
    const at::Tensor f32 = DequantizeNF4(q, at::kFloat);
    ASSERT_EQ(f32.sizes(), at::IntArrayRef({64, 129}));
    // fp16 and bf16 are the fp32 product rounded once more, to nearest even: torch's own rounding.
    EXPECT_TRUE(at::equal(DequantizeNF4(q, at::kHalf), f32.to(at::kHalf)));
    EXPECT_TRUE(at::equal(DequantizeNF4(q, at::kBFloat16), f32.to(at::kBFloat16)));

    ref::NF4View v;
    v.packed = q.packed.data_ptr<uint8_t>();
    v.numel = q.numel();
    v.blocksize = 64;
    v.double_quant = double_quant;
    if (double_quant) {
      v.absmax_codes = q.absmax.data_ptr<uint8_t>();
      v.nested_absmax = q.nested_absmax.data_ptr<float>();
      v.nested_code = q.nested_code.data_ptr<float>();
      v.offset = q.offset.item<float>();
    } else {
      v.absmax = q.absmax.data_ptr<float>();
    }
    std::vector<float> expected(q.numel());
    ASSERT_TRUE(ref::DequantizeNF4(v, kernels::FloatFormat::kFloat32, expected.data()).ok());
    EXPECT_EQ(std::memcmp(f32.data_ptr<float>(), expected.data(), expected.size() * sizeof(float)),
              0);
  }
}

TEST(NF4OpsCpu, RoundTripErrorIsWithinTheFormatsBound) {
  const at::Tensor w = RandomWeight({256, 300}, at::kBFloat16, 4).to(at::kFloat);
  const NF4Weight q = QuantizeNF4(w, 64, /*double_quant=*/true);
  const at::Tensor back = DequantizeNF4(q, at::kFloat);
  const at::Tensor blocks = w.reshape({-1, 64});
  const at::Tensor absmax = blocks.abs().amax(1, /*keepdim=*/true);
  // Half the widest NF4 gap, plus the absmax error of double quantization (under 1% of absmax
  // here).
  const at::Tensor bound = absmax * ((1.0f - 0.6961928f) / 2 + 0.01f);
  EXPECT_TRUE(((back.reshape({-1, 64}) - blocks).abs() <= bound).all().item<bool>());
}

TEST(NF4OpsCpu, OutFormWritesIntoTheGivenBufferAndIsDeterministic) {
  const NF4Weight q = QuantizeNF4(RandomWeight({100, 63}, at::kHalf, 5));
  at::Tensor out = at::empty({100, 63}, at::kHalf);
  const void* before = out.data_ptr();
  DequantizeNF4Out(q, out);
  EXPECT_EQ(out.data_ptr(), before);
  EXPECT_TRUE(at::equal(out, DequantizeNF4(q, at::kHalf)));
  at::Tensor again = at::empty({6300}, at::kHalf);  // any shape with the right numel
  DequantizeNF4Out(q, again);
  EXPECT_TRUE(at::equal(again.reshape({100, 63}), out));
}

TEST(NF4OpsCpu, OutFormFillsTheFirstColumnsOfAWiderMatrix) {
  const NF4Weight q = QuantizeNF4(RandomWeight({100, 63}, at::kFloat, 15));
  at::Tensor wide = at::full({100, 80}, 7.0, at::kBFloat16);
  at::Tensor first = wide.narrow(1, 0, 63);
  DequantizeNF4Out(q, first);
  EXPECT_TRUE(at::equal(first, DequantizeNF4(q, at::kBFloat16)));
  EXPECT_TRUE(wide.narrow(1, 63, 17).eq(7.0).all().item<bool>());
  // The same through the grouped form, beside a dense out.
  const NF4Weight q2 = QuantizeNF4(RandomWeight({64}, at::kFloat, 16));
  at::Tensor wide2 = at::full({100, 66}, 7.0, at::kBFloat16);
  std::vector<at::Tensor> outs = {wide2.narrow(1, 0, 63), at::empty({64}, at::kBFloat16)};
  DequantizeNF4ManyOut({&q, &q2}, outs);
  EXPECT_TRUE(at::equal(outs[0], first));
  EXPECT_TRUE(at::equal(outs[1], DequantizeNF4(q2, at::kBFloat16)));
  EXPECT_TRUE(wide2.narrow(1, 63, 3).eq(7.0).all().item<bool>());
}

TEST(NF4OpsCpu, TinyAndOddSizes) {
  for (int64_t n : {1, 2, 63, 64, 65, 257}) {
    const at::Tensor w = RandomWeight({n}, at::kFloat, static_cast<uint64_t>(n));
    const NF4Weight q = QuantizeNF4(w);
    EXPECT_EQ(q.packed.numel(), (n + 1) / 2);
    EXPECT_EQ(q.absmax.numel(), (n + 63) / 64);
    const at::Tensor back = DequantizeNF4(q, at::kFloat);
    EXPECT_EQ(back.numel(), n);
    EXPECT_LE((back - w).abs().max().item<float>(), w.abs().max().item<float>() * 0.16f) << n;
  }
}

TEST(NF4OpsCpu, ThroughTheDispatcherByName) {
  const at::Tensor w = RandomWeight({4, 64}, at::kFloat, 6);
  auto quantize = c10::Dispatcher::singleton().findSchemaOrThrow("qlorad::nf4_quantize", "");
  torch::jit::Stack stack{w, int64_t{64}, true};
  quantize.callBoxed(&stack);
  ASSERT_EQ(stack.size(), 5u);
  EXPECT_EQ(stack[0].toTensor().numel(), 128);
  EXPECT_EQ(stack[1].toTensor().scalar_type(), at::kByte);
}

TEST(NF4OpsMeta, ShapesAndDtypesWithoutData) {
  const at::Tensor w =
      at::empty({4096, 1000}, at::TensorOptions().dtype(at::kBFloat16).device(at::kMeta));
  const NF4Weight q = QuantizeNF4(w);
  EXPECT_TRUE(q.packed.is_meta());
  EXPECT_EQ(q.packed.numel(), 4096 * 1000 / 2);
  EXPECT_EQ(q.absmax.numel(), 64000);
  EXPECT_EQ(q.absmax.scalar_type(), at::kByte);
  EXPECT_EQ(q.nested_absmax.numel(), 250);
  EXPECT_EQ(q.nested_code.numel(), 256);
  EXPECT_EQ(q.offset.dim(), 0);
  const at::Tensor out = DequantizeNF4(q, at::kHalf);
  EXPECT_TRUE(out.is_meta());
  EXPECT_EQ(out.sizes(), at::IntArrayRef({4096, 1000}));
  EXPECT_EQ(out.scalar_type(), at::kHalf);
  const NF4Weight single = QuantizeNF4(w, 128, /*double_quant=*/false);
  EXPECT_EQ(single.absmax.numel(), 32000);
  EXPECT_EQ(single.absmax.scalar_type(), at::kFloat);
}

TEST(NF4OpsErrors, NaNOrInfWeightNamesTheElement) {
  at::Tensor w = RandomWeight({10, 10}, at::kHalf, 7);
  w.view(-1)[57] = std::numeric_limits<float>::quiet_NaN();
  ExpectErrorContaining([&] { QuantizeNF4(w); }, "qlorad::nf4_quantize: weight: element 57 is NaN");
  w.view(-1)[57] = std::numeric_limits<float>::infinity();
  ExpectErrorContaining([&] { QuantizeNF4(w); }, "element 57 is infinite");
}

TEST(NF4OpsErrors, BadInputsAreNamed) {
  ExpectErrorContaining([] { QuantizeNF4(at::zeros({8}, at::kInt)); },
                        "weight: expected float32, float16 or bfloat16, got Int");
  ExpectErrorContaining([] { QuantizeNF4(at::zeros({8}), 48); },
                        "blocksize: expected a power of two");
  const NF4Weight q = QuantizeNF4(RandomWeight({8, 64}, at::kFloat, 8));

  NF4Weight wrong = q;
  wrong.packed = q.packed.to(at::kFloat);
  ExpectErrorContaining([&] { DequantizeNF4(wrong, at::kHalf); },
                        "packed: expected uint8, got float32");
  wrong = q;
  wrong.shape = {8, 65};
  ExpectErrorContaining([&] { DequantizeNF4(wrong, at::kHalf); },
                        "packed: expected 260 elements, got 256");
  wrong = q;
  wrong.double_quant = false;
  ExpectErrorContaining([&] { DequantizeNF4(wrong, at::kHalf); },
                        "absmax: expected float32, got uint8");
  ExpectErrorContaining([&] { DequantizeNF4(q, at::kDouble); },
                        "dtype: expected float32, float16 or bfloat16, got float64");
  at::Tensor out = at::empty({8, 64}, at::kBFloat16).t();
  ExpectErrorContaining([&] { DequantizeNF4Out(q, out); },
                        "out: expected a contiguous tensor or the first columns of a wider matrix "
                        "(2-D, stride(1) == 1), got sizes [64, 8] and strides [1, 64]");
  out = at::empty({2, 8, 64}, at::kBFloat16).narrow(1, 0, 4);  // spaced, but not 2-D
  ExpectErrorContaining([&] { DequantizeNF4Out(q, out); }, "got sizes [2, 4, 64]");
  out = at::empty({8, 63}, at::kBFloat16);
  ExpectErrorContaining([&] { DequantizeNF4Out(q, out); }, "out: expected 512 elements, got 504");
}

TEST(FloatFormatOf, MapsTheThreeKernelFormatsAndNamesAnyOtherDtype) {
  EXPECT_EQ(FloatFormatOf(at::kFloat, "op", "x"), kernels::FloatFormat::kFloat32);
  EXPECT_EQ(FloatFormatOf(at::kHalf, "op", "x"), kernels::FloatFormat::kFloat16);
  EXPECT_EQ(FloatFormatOf(at::kBFloat16, "op", "x"), kernels::FloatFormat::kBFloat16);
  // Any other dtype is an error naming op and argument, never a silent fp32.
  // Dtypes without a Python name here keep c10's (int32 is "Int").
  for (const auto& [dtype, name] :
       {std::pair{at::kDouble, "float64"}, std::pair{at::kByte, "uint8"},
        std::pair{at::kLong, "int64"}, std::pair{at::kInt, "Int"}}) {
    ExpectErrorContaining([dtype = dtype] { FloatFormatOf(dtype, "qlorad::some_op", "weight"); },
                          std::string("qlorad::some_op: weight: expected float32, float16 or "
                                      "bfloat16, got ") +
                              name);
  }
}

TEST(NF4OpsErrors, PartialDoubleQuantStateIsRejected) {
  const NF4Weight q = QuantizeNF4(RandomWeight({64}, at::kFloat, 9));
  auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("qlorad::nf4_dequantize", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                            at::IntArrayRef, int64_t, at::ScalarType)>();
  ExpectErrorContaining(
      [&] {
        op.call(q.packed, q.absmax, q.nested_absmax, std::nullopt, q.offset, {64}, 64, at::kHalf);
      },
      "expected all three (double quantization) or none, got 2");
}

// Weights of mixed dtypes, sizes and quantization states, for the grouped op.
std::vector<NF4Weight> MixedWeights() {
  std::vector<NF4Weight> weights;
  weights.push_back(QuantizeNF4(RandomWeight({37, 65}, at::kBFloat16, 11), 64, true));
  weights.push_back(QuantizeNF4(RandomWeight({1}, at::kHalf, 12), 64, true));
  weights.push_back(QuantizeNF4(RandomWeight({128, 3}, at::kFloat, 13), 32, false));
  weights.push_back(QuantizeNF4(RandomWeight({63}, at::kBFloat16, 14), 256, true));
  return weights;
}

TEST(NF4OpsCpu, ManyEqualsOneAtATime) {
  const std::vector<NF4Weight> weights = MixedWeights();
  const at::ScalarType dtypes[] = {at::kBFloat16, at::kHalf, at::kFloat, at::kFloat};
  std::vector<const NF4Weight*> pointers;
  std::vector<at::Tensor> outs;
  for (size_t i = 0; i < weights.size(); ++i) {
    pointers.push_back(&weights[i]);
    outs.push_back(at::full(weights[i].shape, 7.0, at::TensorOptions().dtype(dtypes[i])));
  }
  DequantizeNF4ManyOut(pointers, outs);
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor expected = DequantizeNF4(weights[i], dtypes[i]);
    EXPECT_TRUE(at::equal(outs[i], expected)) << "weight " << i;
  }
}

TEST(NF4OpsErrors, ManyNamesTheWeightAndTheListLengths) {
  const std::vector<NF4Weight> weights = MixedWeights();
  std::vector<at::Tensor> outs = {at::empty(weights[0].shape, at::kBFloat16),
                                  at::empty({5}, at::kBFloat16)};  // weight 1 has 1 element
  ExpectErrorContaining(
      [&] {
        DequantizeNF4ManyOut({&weights[0], &weights[1]}, outs);
      },
      "qlorad::nf4_dequantize_many: weight 1: packed: expected 3 elements, got 1");
  ExpectErrorContaining(
      [&] { DequantizeNF4ManyOut({&weights[0]}, outs); },
      "qlorad::nf4_dequantize_many: packed: expected 2 entries (one per out tensor), got 1");
}

TEST(NF4Weight, ToMovesEveryTensor) {
  const NF4Weight q = QuantizeNF4(RandomWeight({64}, at::kFloat, 10));
  const NF4Weight meta = q.to(at::Device(at::kMeta));
  EXPECT_TRUE(meta.packed.is_meta());
  EXPECT_TRUE(meta.absmax.is_meta());
  EXPECT_TRUE(meta.nested_absmax.is_meta());
  EXPECT_TRUE(meta.nested_code.is_meta());
  EXPECT_TRUE(meta.offset.is_meta());
  EXPECT_EQ(meta.shape, q.shape);
}

}  // namespace
}  // namespace qlorad::ops
