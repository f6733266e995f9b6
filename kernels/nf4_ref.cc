#include "kernels/nf4_ref.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <string>

#include "kernels/nf4_decisions.h"
#include "kernels/nf4_format.h"

namespace qlorad::kernels::ref {
namespace {

float AbsMax(const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::fmax(m, std::fabs(FlushSubnormal(x[i])));
  return m;
}

template <typename Store>
void DequantizeEach(const NF4View& w, Store store) {
  const int64_t n_blocks = NumBlocks(w.numel, w.blocksize);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const float absmax = BlockAbsmax(w, b);
    const int64_t end = std::min(w.numel, (b + 1) * w.blocksize);
    for (int64_t i = b * w.blocksize; i < end; ++i) {
      const uint8_t byte = w.packed[i / 2];
      const uint8_t q = (i % 2 == 0) ? (byte >> 4) : (byte & 0x0F);
      store(i, kNF4Code[q] * absmax);
    }
  }
}

}  // namespace

uint16_t FloatToHalfBits(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t mag = bits & 0x7FFFFFFFu;
  if (mag > 0x7F800000u) return sign | 0x7E00u;   // NaN stays a (quiet) NaN
  if (mag >= 0x47800000u) return sign | 0x7C00u;  // >= 65536 (and inf): inf
  if (mag < 0x38800000u) {
    // Below 2^-14 the result is a half subnormal: adding 0.5f lines the half's 10 fraction bits up
    // with the float's lowest mantissa bits, and the hardware add does the round-to-nearest-even.
    const float shifted = std::bit_cast<float>(mag) + 0.5f;
    return sign | static_cast<uint16_t>(std::bit_cast<uint32_t>(shifted) - 0x3F000000u);
  }
  const uint32_t odd = (mag >> 13) & 1u;
  mag += 0xC8000FFFu + odd;  // rebias the exponent (127 -> 15) and round half to even
  return sign | static_cast<uint16_t>(mag >> 13);
}

uint16_t FloatToBFloat16Bits(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t odd = (bits >> 16) & 1u;
  return static_cast<uint16_t>((bits + 0x7FFFu + odd) >> 16);
}

float HalfBitsToFloat(uint16_t h) {
  const float sign = (h & 0x8000u) ? -1.0f : 1.0f;
  const int exponent = (h >> 10) & 0x1F;
  const int fraction = h & 0x3FF;
  if (exponent == 0x1F) return fraction ? std::nanf("") : sign * INFINITY;
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(fraction), -24);
  return sign * std::ldexp(static_cast<float>(fraction + 1024), exponent - 25);
}

float BFloat16BitsToFloat(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

Status CheckBlocksize(int64_t blocksize) {
  if (blocksize < kMinBlocksize || blocksize > kMaxBlocksize ||
      !std::has_single_bit(static_cast<uint64_t>(blocksize))) {
    return InvalidArgument("blocksize: expected a power of two in [" +
                           std::to_string(kMinBlocksize) + ", " + std::to_string(kMaxBlocksize) +
                           "], got " + std::to_string(blocksize));
  }
  return Status::Ok();
}

int64_t NumBlocks(int64_t numel, int64_t blocksize) {
  return (numel + blocksize - 1) / blocksize;
}

uint8_t NF4CodeOf(float normalized) {
  return static_cast<uint8_t>(CountThresholdsBelow(kNF4Thresholds, normalized));
}

uint8_t DynamicCodeOf(const float* code, float x) {
  return static_cast<uint8_t>(SearchDynamicCode(code, x));
}

Status QuantizeNF4(const float* weight, int64_t numel, int64_t blocksize, uint8_t* packed,
                   float* absmax) {
  QLORAD_RETURN_IF_ERROR(CheckBlocksize(blocksize));
  if (numel < 0) return InvalidArgument("numel: expected >= 0, got " + std::to_string(numel));
  for (int64_t i = 0; i < numel; ++i) {
    if (!std::isfinite(weight[i])) return NonFiniteWeight(i, std::isnan(weight[i]));
  }
  const int64_t n_blocks = NumBlocks(numel, blocksize);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t begin = b * blocksize;
    const int64_t end = std::min(numel, begin + blocksize);
    absmax[b] = AbsMax(weight + begin, end - begin);
    // bitsandbytes multiplies by the reciprocal rather than dividing; an all-zero block gives
    // 1 / 0 = inf and 0 * inf = NaN, which is code 0 (-1.0).
    const float inverse = 1.0f / absmax[b];
    for (int64_t i = begin; i < end; i += 2) {
      // The element after an odd numel is bitsandbytes' zero padding.
      const float second = i + 1 < end ? FlushSubnormal(weight[i + 1]) : 0.0f;
      const uint8_t high = NF4CodeOf(FlushSubnormal(weight[i]) * inverse);
      const uint8_t low = NF4CodeOf(second * inverse);
      packed[i / 2] = static_cast<uint8_t>((high << 4) | low);
    }
  }
  return Status::Ok();
}

Status NonFiniteWeight(int64_t index, bool is_nan) {
  return InvalidArgument("weight: element " + std::to_string(index) + " is " +
                         (is_nan ? "NaN" : "infinite") + "; NF4 can only quantize finite values");
}

float MeanOf(const float* values, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += values[i];
  return n > 0 ? static_cast<float>(sum / static_cast<double>(n)) : 0.0f;
}

void DoubleQuantizeAbsmax(const float* absmax, int64_t n_blocks, float offset, const float* code,
                          uint8_t* codes, float* nested_absmax) {
  float centered[kNestedBlocksize];
  for (int64_t b = 0; b < NumBlocks(n_blocks, kNestedBlocksize); ++b) {
    const int64_t begin = b * kNestedBlocksize;
    const int64_t count = std::min(n_blocks - begin, kNestedBlocksize);
    for (int64_t i = 0; i < count; ++i) centered[i] = absmax[begin + i] - offset;
    nested_absmax[b] = AbsMax(centered, count);
    const float inverse = 1.0f / nested_absmax[b];
    for (int64_t i = 0; i < count; ++i)
      codes[begin + i] = DynamicCodeOf(code, centered[i] * inverse);
  }
}

float BlockAbsmax(const NF4View& w, int64_t block) {
  if (!w.double_quant) return w.absmax[block];
  const float scaled =
      w.nested_code[w.absmax_codes[block]] * w.nested_absmax[block / kNestedBlocksize];
  return scaled + w.offset;
}

Status DequantizeNF4(const NF4View& w, FloatFormat format, void* out) {
  QLORAD_RETURN_IF_ERROR(CheckBlocksize(w.blocksize));
  if (w.numel < 0) return InvalidArgument("numel: expected >= 0, got " + std::to_string(w.numel));
  switch (format) {
    case FloatFormat::kFloat32:
      DequantizeEach(w, [out](int64_t i, float v) { static_cast<float*>(out)[i] = v; });
      break;
    case FloatFormat::kFloat16:
      DequantizeEach(
          w, [out](int64_t i, float v) { static_cast<uint16_t*>(out)[i] = FloatToHalfBits(v); });
      break;
    case FloatFormat::kBFloat16:
      DequantizeEach(w, [out](int64_t i, float v) {
        static_cast<uint16_t*>(out)[i] = FloatToBFloat16Bits(v);
      });
      break;
  }
  return Status::Ok();
}

}  // namespace qlorad::kernels::ref
