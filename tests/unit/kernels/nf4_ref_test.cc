// Tests of the torch-free NF4 reference: the NF4 code table against bitsandbytes' published values,
// then the reference against the format's own definitions: nearest NF4 code of x / absmax (with
// bitsandbytes' float thresholds deciding exact ties), the nibble layout, the absmax rebuild of
// double quantization, and round-to-nearest-even to fp16/bf16.
#include "kernels/nf4_ref.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <iterator>
#include <limits>
#include <random>
#include <sstream>
#include <vector>

#include "kernels/nf4_dynamic_map.h"
#include "kernels/nf4_format.h"

namespace qlorad::kernels::ref {
namespace {

// Largest distance from a value in [-1, 1] to its nearest NF4 code: half the widest gap
// (-1..-0.696).
constexpr float kHalfMaxNF4Gap = (-0.6961928009986877f + 1.0f) / 2;
// Same for the dynamic map: its widest gap is 0.9/64 (the finest decade's spacing, between 0.1 and
// 1).
constexpr float kHalfMaxDynamicGap = 0.9f / 64 / 2;

struct Quantized {
  std::vector<uint8_t> packed;
  std::vector<float> absmax;
};

Quantized Quantize(const std::vector<float>& w, int64_t blocksize = 64) {
  const auto n = static_cast<int64_t>(w.size());
  Quantized q{std::vector<uint8_t>(PackedBytes(n)), std::vector<float>(NumBlocks(n, blocksize))};
  const Status s = QuantizeNF4(w.data(), n, blocksize, q.packed.data(), q.absmax.data());
  EXPECT_TRUE(s.ok()) << s.ToString();
  return q;
}

std::vector<float> Dequantize(const Quantized& q, int64_t n, int64_t blocksize = 64) {
  NF4View v;
  v.packed = q.packed.data();
  v.numel = n;
  v.blocksize = blocksize;
  v.absmax = q.absmax.data();
  std::vector<float> out(n);
  EXPECT_TRUE(DequantizeNF4(v, FloatFormat::kFloat32, out.data()).ok());
  return out;
}

uint8_t CodeAt(const std::vector<uint8_t>& packed, int64_t i) {
  return i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 0x0F;
}

std::vector<float> RandomWeights(int64_t n, uint32_t seed, float scale = 0.02f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> w(n);
  for (float& x : w) x = normal(rng);
  return w;
}

// Whether code q is a nearest NF4 code to x; values within `slack` of a midpoint may go either way,
// since bitsandbytes' thresholds are the midpoints rounded to float.
bool IsNearestCode(float x, uint8_t q, float slack) {
  const float d = std::fabs(x - kNF4Code[q]);
  for (float c : kNF4Code) {
    if (std::fabs(x - c) < d - slack) return false;
  }
  return true;
}

// The NF4 data type of QLoRA (arXiv:2305.14314) as bitsandbytes publishes it: get_4bit_type("nf4")
// in bitsandbytes/functional.py, the same literals as its CUDA lookup table in csrc/kernels.cu.
// Typed in here, not taken from nf4_format.h, so that a wrong entry there fails. Each value is a
// float32 printed in full, so the table's float, widened, must equal it exactly; the bits are
// compared too, so that code 7 is +0 (a -0 would dequantize to -0, whose fp16/bf16 bits differ).
TEST(NF4Format, CodeTableIsBitsandbytesPublishedTable) {
  constexpr double kPublished[16] = {
      -1.0,
      -0.6961928009986877,
      -0.5250730514526367,
      -0.39491748809814453,
      -0.28444138169288635,
      -0.18477343022823334,
      -0.09105003625154495,
      0.0,
      0.07958029955625534,
      0.16093020141124725,
      0.24611230194568634,
      0.33791524171829224,
      0.44070982933044434,
      0.5626170039176941,
      0.7229568362236023,
      1.0,
  };
  static_assert(std::size(kPublished) == std::size(kNF4Code));
  for (size_t k = 0; k < std::size(kPublished); ++k) {
    std::ostringstream what;
    what << "code " << k << ": nf4_format.h has " << std::setprecision(17) << kNF4Code[k]
         << ", published " << kPublished[k];
    EXPECT_EQ(static_cast<double>(kNF4Code[k]), kPublished[k]) << what.str();
    EXPECT_EQ(std::bit_cast<uint32_t>(kNF4Code[k]),
              std::bit_cast<uint32_t>(static_cast<float>(kPublished[k])))
        << what.str();
  }
}

TEST(NF4Format, ThresholdsAreMidpointsOfNeighbouringCodes) {
  for (int k = 0; k < 15; ++k) {
    const double midpoint = (static_cast<double>(kNF4Code[k]) + kNF4Code[k + 1]) / 2;
    EXPECT_NEAR(kNF4Thresholds[k], midpoint, 1e-7) << "threshold " << k;
    EXPECT_LE((kNF4Code[k + 1] - kNF4Code[k]) / 2, kHalfMaxNF4Gap) << "gap " << k;
  }
}

TEST(NF4Format, CodeOfValuesExactlyAtThresholdsGoesDown) {
  for (int k = 0; k < 15; ++k) {
    const float t = kNF4Thresholds[k];
    EXPECT_EQ(NF4CodeOf(t), k) << "at threshold " << k;
    EXPECT_EQ(NF4CodeOf(std::nextafter(t, 2.0f)), k + 1) << "just above threshold " << k;
    EXPECT_EQ(NF4CodeOf(std::nextafter(t, -2.0f)), k) << "just below threshold " << k;
  }
  EXPECT_EQ(NF4CodeOf(-1.0f), 0);
  EXPECT_EQ(NF4CodeOf(1.0f), 15);
  EXPECT_EQ(NF4CodeOf(0.0f), 7);
  EXPECT_EQ(NF4CodeOf(-0.0f), 7);
  EXPECT_EQ(NF4CodeOf(std::numeric_limits<float>::quiet_NaN()), 0);
}

TEST(NF4Format, EveryCodeMapsToItself) {
  for (int k = 0; k < 16; ++k) EXPECT_EQ(NF4CodeOf(kNF4Code[k]), k);
}

TEST(DynamicMap, IsSortedSymmetricAndFollowsItsConstruction) {
  const float* m = kDynamicMapSigned;
  for (int i = 1; i < 256; ++i) EXPECT_LT(m[i - 1], m[i]) << i;
  EXPECT_EQ(m[127], 0.0f);
  EXPECT_EQ(m[255], 1.0f);
  for (int k = 0; k < 127; ++k) EXPECT_EQ(m[k], -m[254 - k]) << k;
  // Positive entries: for exponent e in 0..6, 2^e midpoints of a linspace(0.1, 1) scaled by
  // 10^(e-6).
  std::vector<double> expected;
  for (int e = 0; e < 7; ++e) {
    const int items = 1 << e;
    for (int j = 0; j < items; ++j)
      expected.push_back(std::pow(10.0, e - 6) * (0.1 + 0.9 * (j + 0.5) / items));
  }
  std::sort(expected.begin(), expected.end());
  ASSERT_EQ(expected.size(), 127u);
  for (int k = 0; k < 127; ++k) EXPECT_NEAR(m[128 + k], expected[k], 4e-7 * expected[k]) << k;
}

TEST(DynamicCode, PicksANearestEntryAndHandlesTheEnds) {
  const float* m = kDynamicMapSigned;
  for (int i = 0; i < 256; ++i) EXPECT_EQ(DynamicCodeOf(m, m[i]), i) << i;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (int t = 0; t < 20000; ++t) {
    const float x = uniform(rng) * std::pow(10.0f, -static_cast<float>(t % 7));
    const uint8_t q = DynamicCodeOf(m, x);
    const float d = std::fabs(x - m[q]);
    for (int i = 0; i < 256; ++i) ASSERT_LE(d, std::fabs(x - m[i]) + 1e-7f * std::fabs(x)) << x;
  }
  EXPECT_EQ(DynamicCodeOf(m, -1.0f), 0);
  EXPECT_EQ(DynamicCodeOf(m, 1.0f), 255);
  EXPECT_EQ(DynamicCodeOf(m, std::numeric_limits<float>::quiet_NaN()), 0);
}

TEST(HalfConversion, RoundTripsEveryFiniteHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    if ((bits & 0x7C00) == 0x7C00 && (bits & 0x03FF) != 0) continue;  // NaN payloads
    ASSERT_EQ(FloatToHalfBits(HalfBitsToFloat(bits)), bits) << std::hex << h;
  }
}

TEST(HalfConversion, RoundsToNearestEven) {
  // Between two neighbouring halves: below the midpoint goes down, above goes up, at it goes to
  // even.
  for (uint16_t h : {0x0001, 0x0002, 0x03FF, 0x0400, 0x3C00, 0x3C01, 0x7000, 0x7BFE}) {
    const double lo = HalfBitsToFloat(h);
    const double hi = HalfBitsToFloat(static_cast<uint16_t>(h + 1));
    const auto mid = static_cast<float>((lo + hi) / 2);
    const uint16_t even = (h % 2 == 0) ? h : static_cast<uint16_t>(h + 1);
    EXPECT_EQ(FloatToHalfBits(mid), even) << std::hex << h;
    EXPECT_EQ(FloatToHalfBits(std::nextafter(mid, 0.0f)), h) << std::hex << h;
    EXPECT_EQ(FloatToHalfBits(std::nextafter(mid, 1e9f)), h + 1) << std::hex << h;
    EXPECT_EQ(FloatToHalfBits(-mid), even | 0x8000) << std::hex << h;
  }
  EXPECT_EQ(FloatToHalfBits(65519.99f), 0x7BFF);
  EXPECT_EQ(FloatToHalfBits(65520.0f), 0x7C00);
  EXPECT_EQ(FloatToHalfBits(1e-9f), 0x0000);
}

// The edges a GGUF export's fp16 scales meet too: signed zeros, the smallest subnormal and the tie
// below it, infinity, NaN, and ties at 1.
TEST(HalfConversion, KnownValues) {
  EXPECT_EQ(FloatToHalfBits(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalfBits(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalfBits(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalfBits(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalfBits(65504.0f), 0x7BFF);  // largest finite
  EXPECT_EQ(FloatToHalfBits(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.0f, -25)), 0x0000);  // half of it ties to even 0
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToHalfBits(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 units ties up to even 2
  EXPECT_EQ(FloatToHalfBits(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(FloatToHalfBits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_TRUE(std::isnan(HalfBitsToFloat(FloatToHalfBits(std::nanf("")))));
}

TEST(BFloat16Conversion, RoundsToNearestEven) {
  EXPECT_EQ(FloatToBFloat16Bits(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBFloat16Bits(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie, even below
  EXPECT_EQ(FloatToBFloat16Bits(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie, even above
  EXPECT_EQ(FloatToBFloat16Bits(std::bit_cast<float>(0x3F808001u)), 0x3F81);
  EXPECT_EQ(FloatToBFloat16Bits(std::bit_cast<float>(0x3F807FFFu)), 0x3F80);
  EXPECT_EQ(FloatToBFloat16Bits(-2.0f), 0xC000);
  for (uint32_t b = 0; b < 0x10000; b += 7) {
    const auto bits = static_cast<uint16_t>(b);
    if ((bits & 0x7F80) == 0x7F80) continue;
    ASSERT_EQ(FloatToBFloat16Bits(BFloat16BitsToFloat(bits)), bits);
  }
}

TEST(Blocksize, RejectsNonPowersOfTwoAndOutOfRange) {
  EXPECT_TRUE(CheckBlocksize(64).ok());
  EXPECT_TRUE(CheckBlocksize(32).ok());
  EXPECT_TRUE(CheckBlocksize(4096).ok());
  for (int64_t b : {0, 16, 48, 100, 8192, -64}) {
    const Status s = CheckBlocksize(b);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << b;
    EXPECT_NE(s.message().find("blocksize"), std::string::npos);
  }
}

TEST(Quantize, AbsmaxIsTheBlockMaximumAndCodesAreNearest) {
  for (int64_t blocksize : {32, 64, 128, 4096}) {
    const std::vector<float> w = RandomWeights(10000, 1, 0.05f);
    const Quantized q = Quantize(w, blocksize);
    ASSERT_EQ(q.absmax.size(), static_cast<size_t>(NumBlocks(10000, blocksize)));
    for (size_t b = 0; b < q.absmax.size(); ++b) {
      float m = 0.0f;
      for (size_t i = b * blocksize; i < std::min(w.size(), (b + 1) * blocksize); ++i)
        m = std::max(m, std::fabs(w[i]));
      ASSERT_EQ(q.absmax[b], m) << "block " << b;
    }
    for (size_t i = 0; i < w.size(); ++i) {
      const float normalized = w[i] / q.absmax[i / blocksize];
      ASSERT_TRUE(IsNearestCode(normalized, CodeAt(q.packed, i), 1e-6f)) << "element " << i;
    }
  }
}

TEST(Quantize, PacksElementTwoKHighAndTwoKPlusOneLow) {
  // Weights that are NF4 values times a scale, with a +-1 code in each block fixing absmax = scale:
  // the codes come back exactly, and so do the weights after dequantization.
  std::mt19937 rng(3);
  const int64_t n = 64 * 5 + 17;
  std::vector<uint8_t> pattern(n);
  for (auto& p : pattern) p = static_cast<uint8_t>(rng() % 16);
  for (int64_t b = 0; b * 64 < n; ++b) pattern[b * 64 + 5] = (b % 2) ? 0 : 15;
  const float scale = 0.0371f;
  std::vector<float> w(n);
  for (int64_t i = 0; i < n; ++i) w[i] = kNF4Code[pattern[i]] * scale;
  const Quantized q = Quantize(w);
  for (int64_t k = 0; k < n / 2; ++k)
    ASSERT_EQ(q.packed[k], (pattern[2 * k] << 4) | pattern[2 * k + 1]) << k;
  EXPECT_EQ(q.packed.back(), (pattern[n - 1] << 4) | 7)
      << "odd numel: the low nibble codes the zero padding";
  const std::vector<float> back = Dequantize(q, n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(back[i], w[i]) << i;
}

TEST(Quantize, AllZeroBlockGetsCodeZeroLikeBitsandbytes) {
  // 1 / 0 = inf and 0 * inf = NaN, which bitsandbytes' thresholds send to code 0; dequantized it is
  // -1 * 0 = -0, still zero.
  std::vector<float> w(130, 0.0f);
  for (int i = 64; i < 128; ++i) w[i] = 0.25f * ((i % 3) - 1);
  const Quantized q = Quantize(w);
  EXPECT_EQ(q.absmax[0], 0.0f);
  EXPECT_EQ(q.absmax[2], 0.0f);
  for (int k = 0; k < 32; ++k) EXPECT_EQ(q.packed[k], 0x00) << k;
  EXPECT_EQ(q.packed[64], 0x00);
  const std::vector<float> back = Dequantize(q, 130);
  for (int i = 0; i < 130; ++i) EXPECT_EQ(back[i], w[i]) << i;
}

TEST(Quantize, SubnormalWeightsCountAsZeroLikeBitsandbytes) {
  // bitsandbytes' kernel flushes subnormals: a block of them is an all-zero block, and beside a
  // normal value they quantize like zeros (code 7).
  std::vector<float> w(128);
  for (int i = 0; i < 128; ++i)
    w[i] = ((i % 2) ? -1.0f : 1.0f) * 1e-40f * static_cast<float>(i + 1);
  w[64] = 0.5f;
  const Quantized q = Quantize(w);
  EXPECT_EQ(q.absmax[0], 0.0f);
  for (int k = 0; k < 32; ++k) EXPECT_EQ(q.packed[k], 0x00) << k;
  EXPECT_EQ(q.absmax[1], 0.5f);
  EXPECT_EQ(q.packed[32], 0xF7);  // 0.5 / 0.5 = 1.0 is code 15; the subnormal beside it code 7
  for (int k = 33; k < 64; ++k) EXPECT_EQ(q.packed[k], 0x77) << k;
}

TEST(Quantize, SingleHugeValueKeepsItselfAndFlushesTheRest) {
  std::vector<float> w = RandomWeights(64, 5, 1.0f);
  w[17] = -3.0e30f;
  const Quantized q = Quantize(w);
  EXPECT_EQ(q.absmax[0], 3.0e30f);
  const std::vector<float> back = Dequantize(q, 64);
  EXPECT_EQ(back[17], -3.0e30f);
  for (int i = 0; i < 64; ++i) {
    if (i != 17) {
      EXPECT_EQ(back[i], 0.0f) << i;
    }
  }
}

TEST(Quantize, OddAndTinySizesRoundTripWithinTheFormatsError) {
  for (int64_t n : {1, 2, 3, 31, 63, 64, 65, 127, 129, 1000, 4097}) {
    const std::vector<float> w = RandomWeights(n, static_cast<uint32_t>(n), 0.1f);
    const Quantized q = Quantize(w);
    ASSERT_EQ(q.packed.size(), static_cast<size_t>((n + 1) / 2)) << n;
    ASSERT_EQ(q.absmax.size(), static_cast<size_t>((n + 63) / 64)) << n;
    const std::vector<float> back = Dequantize(q, n);
    for (int64_t i = 0; i < n; ++i) {
      const float bound = q.absmax[i / 64] * kHalfMaxNF4Gap * (1.0f + 1e-6f);
      ASSERT_LE(std::fabs(back[i] - w[i]), bound) << "n=" << n << " i=" << i;
    }
    if (n % 2 == 1) {
      EXPECT_EQ(q.packed.back() & 0x0F, 7) << "padding of n=" << n;
    }
  }
}

TEST(Quantize, NaNOrInfIsAnErrorNamingTheElement) {
  std::vector<float> w = RandomWeights(100, 9);
  std::vector<uint8_t> packed(50);
  std::vector<float> absmax(2);
  w[42] = std::numeric_limits<float>::quiet_NaN();
  Status s = QuantizeNF4(w.data(), 100, 64, packed.data(), absmax.data());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("element 42 is NaN"), std::string::npos) << s.message();
  w[42] = 0.0f;
  w[99] = -std::numeric_limits<float>::infinity();
  s = QuantizeNF4(w.data(), 100, 64, packed.data(), absmax.data());
  EXPECT_NE(s.message().find("element 99 is infinite"), std::string::npos) << s.message();
}

TEST(DoubleQuant, RebuildsAbsmaxWithinTheDynamicMapsError) {
  const int64_t n_blocks = 1000;  // 3 full nested blocks and a partial one
  std::vector<float> absmax = RandomWeights(n_blocks, 11, 0.01f);
  for (float& a : absmax) a = std::fabs(a) + 0.001f;
  const float offset = MeanOf(absmax.data(), n_blocks);
  std::vector<uint8_t> codes(n_blocks);
  std::vector<float> nested(NumBlocks(n_blocks, kNestedBlocksize));
  ASSERT_EQ(nested.size(), 4u);
  DoubleQuantizeAbsmax(absmax.data(), n_blocks, offset, kDynamicMapSigned, codes.data(),
                       nested.data());
  NF4View v;
  v.double_quant = true;
  v.absmax_codes = codes.data();
  v.nested_absmax = nested.data();
  v.nested_code = kDynamicMapSigned;
  v.offset = offset;
  for (size_t b = 0; b < nested.size(); ++b) {
    float m = 0.0f;
    for (size_t i = b * 256; i < std::min<size_t>(n_blocks, (b + 1) * 256); ++i)
      m = std::max(m, std::fabs(absmax[i] - offset));
    EXPECT_EQ(nested[b], m) << b;
  }
  for (int64_t b = 0; b < n_blocks; ++b) {
    // Two roundings, as bitsandbytes does them: the 8-bit dequantize, then the offset add.
    const float scaled = kDynamicMapSigned[codes[b]] * nested[b / 256];
    EXPECT_EQ(BlockAbsmax(v, b), scaled + offset) << b;
    EXPECT_LE(std::fabs(BlockAbsmax(v, b) - absmax[b]),
              nested[b / 256] * kHalfMaxDynamicGap * 1.001f)
        << b;
  }
}

TEST(Dequantize, MatchesTheFormulaBitForBitInEveryFormat) {
  // Random bytes and codes: out[i] = round_to_format(fp32(code[q_i] * fp32(fp32(map[c_b] * nested)
  // + offset))).
  std::mt19937 rng(13);
  const int64_t n = 64 * 300 + 33;
  const int64_t n_blocks = NumBlocks(n, 64);
  std::vector<uint8_t> packed(PackedBytes(n)), codes(n_blocks);
  for (auto& p : packed) p = static_cast<uint8_t>(rng());
  for (auto& c : codes) c = static_cast<uint8_t>(rng());
  std::vector<float> nested = {0.013f, 0.0071f};
  NF4View v;
  v.packed = packed.data();
  v.numel = n;
  v.double_quant = true;
  v.absmax_codes = codes.data();
  v.nested_absmax = nested.data();
  v.nested_code = kDynamicMapSigned;
  v.offset = 0.0213f;
  std::vector<float> f32(n);
  std::vector<uint16_t> f16(n), b16(n);
  ASSERT_TRUE(DequantizeNF4(v, FloatFormat::kFloat32, f32.data()).ok());
  ASSERT_TRUE(DequantizeNF4(v, FloatFormat::kFloat16, f16.data()).ok());
  ASSERT_TRUE(DequantizeNF4(v, FloatFormat::kBFloat16, b16.data()).ok());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = i / 64;
    volatile float scaled =
        kDynamicMapSigned[codes[b]] * nested[b / 256];  // volatile: keep the rounding
    const float absmax = scaled + v.offset;
    const uint8_t q = (i % 2 == 0) ? packed[i / 2] >> 4 : packed[i / 2] & 0x0F;
    const float value = kNF4Code[q] * absmax;
    ASSERT_EQ(std::bit_cast<uint32_t>(f32[i]), std::bit_cast<uint32_t>(value)) << i;
    ASSERT_EQ(f16[i], FloatToHalfBits(value)) << i;
    ASSERT_EQ(b16[i], FloatToBFloat16Bits(value)) << i;
  }
}

}  // namespace
}  // namespace qlorad::kernels::ref
