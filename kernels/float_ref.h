// Host-side element access of the kernels' float formats for the CPU references: fp32 values as
// they are, fp16 and bf16 as raw 16-bit patterns rounded to nearest even (as CUDA's __float2half_rn
// and __float2bfloat16_rn do). Torch-free and CUDA-free.
#pragma once

#include <cstdint>

#include "kernels/float_format.h"
#include "kernels/nf4_ref.h"

namespace qlorad::kernels::ref {

inline float LoadFloat(FloatFormat format, const void* base, int64_t i) {
  switch (format) {
    case FloatFormat::kFloat16:
      return HalfBitsToFloat(static_cast<const uint16_t*>(base)[i]);
    case FloatFormat::kBFloat16:
      return BFloat16BitsToFloat(static_cast<const uint16_t*>(base)[i]);
    case FloatFormat::kFloat32:
      break;
  }
  return static_cast<const float*>(base)[i];
}

inline void StoreFloat(FloatFormat format, void* base, int64_t i, float v) {
  switch (format) {
    case FloatFormat::kFloat16:
      static_cast<uint16_t*>(base)[i] = FloatToHalfBits(v);
      return;
    case FloatFormat::kBFloat16:
      static_cast<uint16_t*>(base)[i] = FloatToBFloat16Bits(v);
      return;
    case FloatFormat::kFloat32:
      static_cast<float*>(base)[i] = v;
      return;
  }
}

// v rounded to `format` and widened back: what a value is after a round trip through a tensor.
inline float RoundTo(FloatFormat format, float v) {
  switch (format) {
    case FloatFormat::kFloat16:
      return HalfBitsToFloat(FloatToHalfBits(v));
    case FloatFormat::kBFloat16:
      return BFloat16BitsToFloat(FloatToBFloat16Bits(v));
    case FloatFormat::kFloat32:
      break;
  }
  return v;
}

}  // namespace qlorad::kernels::ref
