// Device code of the fused SwiGLU (launchers: swiglu.cu; formulas and layout: swiglu_params.h).
//
// A thread takes one pack of kVec columns (16 bytes on the vector path) and walks down the rows:
// blockIdx.x picks the columns, blockIdx.y the first row, gridDim.y the row step, so no thread
// divides an index, and a row of 8192 bf16 columns is four blocks of 256 threads.
#pragma once

#include <cstdint>

#include "kernels/float_types.cuh"
#include "kernels/swiglu_params.h"

namespace qlorad::kernels::cuda {

inline constexpr int kSwigluThreads = 256;

// Rounds an fp32 value to T and widens it back: the intermediate roundings of torch's ops.
template <typename T>
struct dRoundTo {
  __device__ float operator()(float x) const { return dToFloat(dFromFloat<T>(x)); }
};

template <typename T, int kVec>
__device__ __forceinline__ Pack<T, kVec> dLoadPack(const void* base, int64_t offset) {
  return *reinterpret_cast<const Pack<T, kVec>*>(static_cast<const T*>(base) + offset);
}

template <typename T, int kVec>
__device__ __forceinline__ void dStorePack(void* base, int64_t offset, const Pack<T, kVec>& v) {
  *reinterpret_cast<Pack<T, kVec>*>(static_cast<T*>(base) + offset) = v;
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kSwigluThreads) kSwigluForward(const SwigluParams p) {
  const int64_t c = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) * kVec;
  if (c >= p.cols) return;
  const int64_t out_stride = p.out_stride > 0 ? p.out_stride : p.cols;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    const Pack<T, kVec> g = dLoadPack<T, kVec>(p.gate, r * p.gate_stride + c);
    const Pack<T, kVec> u = dLoadPack<T, kVec>(p.up, r * p.up_stride + c);
    Pack<T, kVec> h;
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      h.v[e] = dFromFloat<T>(SwigluOf(dToFloat(g.v[e]), dToFloat(u.v[e]), dRoundTo<T>{}));
    }
    dStorePack(p.out, r * out_stride + c, h);
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kSwigluThreads) kSwigluBackward(const SwigluParams p) {
  const int64_t c = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) * kVec;
  if (c >= p.cols) return;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    const Pack<T, kVec> dh = dLoadPack<T, kVec>(p.dh, r * p.dh_stride + c);
    const Pack<T, kVec> g = dLoadPack<T, kVec>(p.gate, r * p.gate_stride + c);
    const Pack<T, kVec> u = dLoadPack<T, kVec>(p.up, r * p.up_stride + c);
    Pack<T, kVec> dgate;
    Pack<T, kVec> dup;
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      float dg = 0.0f;
      float du = 0.0f;
      SwigluGradOf(dToFloat(dh.v[e]), dToFloat(g.v[e]), dToFloat(u.v[e]), dRoundTo<T>{}, dg, du);
      dgate.v[e] = dFromFloat<T>(dg);
      dup.v[e] = dFromFloat<T>(du);
    }
    dStorePack(p.out, r * 2 * p.cols + c, dgate);
    dStorePack(p.out, r * 2 * p.cols + p.cols + c, dup);
    if (p.h_out != nullptr) {  // the same for every thread: no divergence
      Pack<T, kVec> h;
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        h.v[e] = dFromFloat<T>(SwigluOf(dToFloat(g.v[e]), dToFloat(u.v[e]), dRoundTo<T>{}));
      }
      dStorePack(p.h_out, r * p.cols + c, h);
    }
  }
}

}  // namespace qlorad::kernels::cuda
