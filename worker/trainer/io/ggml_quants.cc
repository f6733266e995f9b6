#include "worker/trainer/io/ggml_quants.h"

#include <cmath>
#include <cstring>

namespace qlorad::trainer {

uint16_t Fp32ToFp16Bits(float value) {
  uint32_t x;
  std::memcpy(&x, &value, sizeof(x));
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN, quiet
  // 65520 (0x477ff000) is halfway between fp16's largest value 65504 and 2^16: it and everything
  // above round to infinity.
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (abs >= 0x38800000u) {
    // Normal in fp16 (>= 2^-14): rebias the exponent (127 -> 15) and round the 23-bit mantissa to
    // 10 bits, to nearest even; a carry out of the mantissa correctly bumps the exponent.
    const uint32_t rounded = abs + 0x0fffu + ((abs >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
  }
  // Subnormal in fp16: the value in units of 2^-24, rounded to nearest even. Below 2^-25 (and at
  // it, a tie that goes to the even 0) that is zero.
  if (abs <= 0x33000000u) return static_cast<uint16_t>(sign);
  const uint32_t exponent = abs >> 23;                      // 102..112
  const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;  // with the implicit bit
  const uint32_t shift = 126u - exponent;                   // 14..24
  uint32_t q = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (q & 1u))) ++q;  // 0x400 is the smallest normal: still right
  return static_cast<uint16_t>(sign | q);
}

float Fp16BitsToFp32(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  uint32_t x;
  if (exponent == 0x1f) {
    x = sign | 0x7f800000u | (mantissa << 13);  // inf or NaN
  } else if (exponent != 0) {
    x = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else {
    // Zero or subnormal: mantissa * 2^-24, exact in fp32.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    std::memcpy(&x, &magnitude, sizeof(x));
    x |= sign;
  }
  float out;
  std::memcpy(&out, &x, sizeof(out));
  return out;
}

void QuantizeRowQ8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQ8_0BlockValues; ++b) {
    const float* block = x + b * kQ8_0BlockValues;
    uint8_t* dst = out + b * kQ8_0BlockBytes;
    float amax = 0.0f;
    for (int64_t j = 0; j < kQ8_0BlockValues; ++j) amax = std::fmax(amax, std::fabs(block[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t d16 = Fp32ToFp16Bits(d);
    std::memcpy(dst, &d16, sizeof(d16));
    for (int64_t j = 0; j < kQ8_0BlockValues; ++j) {
      // |x * id| <= 127 up to rounding of id, and roundf stays within int8.
      const auto q = static_cast<int8_t>(std::roundf(block[j] * id));
      std::memcpy(dst + 2 + j, &q, 1);
    }
  }
}

void DequantizeRowQ8_0(const uint8_t* blocks, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQ8_0BlockValues; ++b) {
    const uint8_t* src = blocks + b * kQ8_0BlockBytes;
    uint16_t d16;
    std::memcpy(&d16, src, sizeof(d16));
    const float d = Fp16BitsToFp32(d16);
    for (int64_t j = 0; j < kQ8_0BlockValues; ++j) {
      int8_t q;
      std::memcpy(&q, src + 2 + j, 1);
      out[b * kQ8_0BlockValues + j] = d * static_cast<float>(q);
    }
  }
}

}  // namespace qlorad::trainer
