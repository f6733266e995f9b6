#include "worker/trainer/io/ggml_quants.h"

#include <cmath>
#include <cstring>

#include "kernels/nf4_ref.h"

namespace qlorad::trainer {

void QuantizeRowQ8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQ8_0BlockValues; ++b) {
    const float* block = x + b * kQ8_0BlockValues;
    uint8_t* dst = out + b * kQ8_0BlockBytes;
    float amax = 0.0f;
    for (int64_t j = 0; j < kQ8_0BlockValues; ++j) amax = std::fmax(amax, std::fabs(block[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t d16 = kernels::ref::FloatToHalfBits(d);
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
    const float d = kernels::ref::HalfBitsToFloat(d16);
    for (int64_t j = 0; j < kQ8_0BlockValues; ++j) {
      int8_t q;
      std::memcpy(&q, src + 2 + j, 1);
      out[b * kQ8_0BlockValues + j] = d * static_cast<float>(q);
    }
  }
}

}  // namespace qlorad::trainer
