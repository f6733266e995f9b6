// The code decisions of bitsandbytes' quantizers, written once for the CPU reference and the CUDA
// kernels (host and device). Plain float arithmetic: the translation units that include this build
// without FMA contraction, so each operation rounds on its own as in bitsandbytes.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define QLORAD_HOST_DEVICE __host__ __device__
#else
#define QLORAD_HOST_DEVICE
#endif

namespace qlorad::kernels {

// bitsandbytes' quantize kernel runs with subnormals flushed to zero: a subnormal fp32 weight
// (possible from bf16 and fp32, never from fp16) counts as 0 in the absmax and the codes. Seen on
// an H100 with bitsandbytes 0.50.2: a block of subnormals packs as an all-zero block (NaN codes:
// 0).
QLORAD_HOST_DEVICE inline float FlushSubnormal(float x) {
  constexpr float kSmallestNormal = 1.17549435e-38f;  // FLT_MIN
  return (x < kSmallestNormal && x > -kSmallestNormal) ? 0.0f : x;
}

// NF4: the number of the 15 sorted thresholds strictly below the normalized value (NaN: 0).
QLORAD_HOST_DEVICE inline uint32_t CountThresholdsBelow(const float* thresholds, float normalized) {
  uint32_t code = 0;
  for (int k = 0; k < 15; ++k) code += normalized > thresholds[k] ? 1u : 0u;
  return code;
}

// 8-bit: binary search over the sorted 256-entry `code` table, then the nearer neighbour by the
// float midpoint; a tie goes to the entry the search ended on, NaN to entry 0.
QLORAD_HOST_DEVICE inline uint32_t SearchDynamicCode(const float* code, float x) {
  int pivot = 127;
  int upper_pivot = 255;
  int lower_pivot = 0;
  float lower = -1.0f;
  float upper = 1.0f;
  float val = code[pivot];
  for (int step = 64; step > 0; step >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += step;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= step;
    }
    val = code[pivot];
  }
  // The search starts with +-1 as the bounds; the table's own end entries replace them if reached.
  if (upper_pivot == 255) upper = code[255];
  if (lower_pivot == 0) lower = code[0];
  if (x > val) {
    const float midpoint = (upper + val) * 0.5f;
    return static_cast<uint32_t>(x > midpoint ? upper_pivot : pivot);
  }
  const float midpoint = (lower + val) * 0.5f;
  return static_cast<uint32_t>(x < midpoint ? lower_pivot : pivot);
}

}  // namespace qlorad::kernels
