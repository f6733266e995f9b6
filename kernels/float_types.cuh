// Device-side element types of the kernels' float formats (kernels/float_format.h), shared by the
// kernel families: conversions to and from the fp32 they compute in, the 16-byte packs they load
// and store, and the host-side switch from a FloatFormat to its element type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#include "kernels/float_format.h"

namespace qlorad::kernels::cuda {

template <typename T>
__device__ __forceinline__ float dToFloat(T v);
template <>
__device__ __forceinline__ float dToFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float dToFloat<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float dToFloat<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T dFromFloat(float v);
template <>
__device__ __forceinline__ float dFromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half dFromFloat<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 dFromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Host side, for the launchers: calls f(T{}) with T the element type of `format`.
template <typename F>
void WithFloatType(FloatFormat format, F&& f) {
  switch (format) {
    case FloatFormat::kFloat32:
      f(float{});
      break;
    case FloatFormat::kFloat16:
      f(__half{});
      break;
    case FloatFormat::kBFloat16:
      f(__nv_bfloat16{});
      break;
  }
}

// kVec values moved by one load or store instruction (16 bytes at most per instruction).
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// Host side, for the launchers: whether `ptr` may be read or written as packs of `bytes`.
inline bool PackAligned(const void* ptr, size_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

}  // namespace qlorad::kernels::cuda
