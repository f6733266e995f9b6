// Device code of NF4 dequantization (launchers: nf4_dequant.cu; API: nf4_dequant.h).
//
// Work split: a thread takes one chunk of 16 packed bytes = 32 elements, i.e. one 16-byte load. A
// chunk never straddles two quantization blocks (blocksize >= 32 and chunks are 32-aligned), so it
// needs one absmax. Elements past the last full chunk, and every element when a pointer is not
// 16-byte aligned, go through a one-element-per-thread path.
//
// Output rows (NF4DequantParams::row_length/row_stride) move each chunk to its row's place; the
// launcher sends a weight down the vector path only when every chunk lies inside one row and
// every row starts 16-byte aligned.
//
// Rounding follows bitsandbytes step by step (__fmul_rn / __fadd_rn, which the compiler may not
// contract into an FMA): absmax = fp32(fp32(code[c] * nested_absmax) + offset), then
// value = fp32(nf4[q] * absmax), then one rounding to the output format.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/nf4_dequant.h"

namespace qlorad::kernels::cuda {

inline constexpr int kDequantThreads = 256;
inline constexpr int kElementsPerChunk = 32;  // one uint4 of packed bytes

// The 16 NF4 values travel as a kernel parameter (constant bank) and are copied to shared memory,
// where 16 entries sit in 16 distinct banks: lookups by any lanes never conflict.
struct NF4Table {
  float value[16];
};

// Packed bytes are read once: stream them (.cs, evict-first) so they do not push the tables and
// absmax codes, which every chunk of a block reads again, out of the caches.
__device__ __forceinline__ uint4 dLoadStreaming(const uint8_t* p) {
  uint4 v;
  asm("ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// Store with .cs: the output is not read again by this kernel.
__device__ __forceinline__ void dStoreStreaming(void* p, uint4 v) {
  asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z),
               "r"(v.w)
               : "memory");
}

// Absmax codes and nested absmax are re-read by neighbouring chunks: keep them (evict-last).
__device__ __forceinline__ uint32_t dLoadResidentByte(const uint8_t* p) {
  uint32_t v;
  asm("ld.global.nc.L1::evict_last.u8 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ float dLoadResidentFloat(const float* p) {
  float v;
  asm("ld.global.nc.L1::evict_last.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ float dBlockAbsmax(const NF4DequantParams& p, const float* s_code,
                                              int64_t block, float offset) {
  if (!p.double_quant) return dLoadResidentFloat(p.absmax + block);
  const uint32_t code = dLoadResidentByte(p.absmax_codes + block);
  const float nested = dLoadResidentFloat(p.nested_absmax + (block >> 8));
  return __fadd_rn(__fmul_rn(s_code[code], nested), offset);
}

// Where value e of the weight goes in the output, in values: e itself when the rows lie one after
// another, else its row's start plus its column.
__device__ __forceinline__ int64_t dOutIndex(const NF4DequantParams& p, int64_t e) {
  if (p.row_stride == p.row_length) return e;
  return (e / p.row_length) * p.row_stride + e % p.row_length;
}

// The same for the first value of chunk k on the vector path (row_length a multiple of 32, and
// fewer than 2^32 chunks: the launcher checks both), in 32-bit arithmetic: a 64-bit division per
// store would cost more than the store.
__device__ __forceinline__ int64_t dChunkOutIndex(const NF4DequantParams& p, int64_t k) {
  if (p.row_stride == p.row_length) return k * kElementsPerChunk;
  const uint32_t per_row = static_cast<uint32_t>(p.row_length / kElementsPerChunk);
  const uint32_t row = static_cast<uint32_t>(k) / per_row;
  const uint32_t col = static_cast<uint32_t>(k) - row * per_row;
  return static_cast<int64_t>(row) * p.row_stride + int64_t{col} * kElementsPerChunk;
}

// How two dequantized values become one 32-bit word of the output (element 2k in the low half,
// which is the lower address) and how one value is stored alone.
template <typename OutT>
struct dOut;

template <>
struct dOut<__half> {
  static constexpr int kWordsPerChunk = 16;
  __device__ static uint32_t Pair(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ static void StoreOne(void* out, int64_t i, float v) {
    static_cast<__half*>(out)[i] = __float2half_rn(v);
  }
};

template <>
struct dOut<__nv_bfloat16> {
  static constexpr int kWordsPerChunk = 16;
  __device__ static uint32_t Pair(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ static void StoreOne(void* out, int64_t i, float v) {
    static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(v);
  }
};

template <>
struct dOut<float> {
  static constexpr int kWordsPerChunk = 32;
  __device__ static void StoreOne(void* out, int64_t i, float v) {
    static_cast<float*>(out)[i] = v;
  }
};

// Dequantizes the 32 elements of one chunk into `words` (the output's bytes as 32-bit words).
template <typename OutT>
__device__ __forceinline__ void dDequantizeChunk(uint4 bytes, float absmax, const float* s_nf4,
                                                 uint32_t (&words)[dOut<OutT>::kWordsPerChunk]) {
  const uint32_t quads[4] = {bytes.x, bytes.y, bytes.z, bytes.w};
#pragma unroll
  for (int b = 0; b < 16; ++b) {
    const uint32_t byte = (quads[b / 4] >> (8 * (b % 4))) & 0xFFu;
    const float hi = __fmul_rn(s_nf4[byte >> 4], absmax);     // element 2b
    const float lo = __fmul_rn(s_nf4[byte & 0x0Fu], absmax);  // element 2b + 1
    if constexpr (dOut<OutT>::kWordsPerChunk == 16) {
      words[b] = dOut<OutT>::Pair(hi, lo);
    } else {
      words[2 * b] = __float_as_uint(hi);
      words[2 * b + 1] = __float_as_uint(lo);
    }
  }
}

// Thread blocks [first_block[i], first_block[i + 1]) of a launch serve weights[i], so one launch
// dequantizes several weights (a layer's projections) without a gap between them, and a small
// weight's tail wave is filled by the next weight's blocks. Passed as a __grid_constant__
// parameter: indexed in place, never copied to local memory.
template <int kCapacity>
struct NF4DequantGroup {
  NF4DequantParams weights[kCapacity];
  int32_t first_block[kCapacity + 1];
  int32_t log2_blocksize[kCapacity];
  int32_t count;
};

// kStaged: the 32 lanes of a warp hand their chunks' output through shared memory so that each
// 16-byte store instruction of the warp writes 512 contiguous bytes (without staging, lane i's
// stores sit 64 or 128 bytes apart and every instruction touches 4x as many cache lines).
// kVector: false when a pointer is not 16-byte aligned; then every element takes the scalar path.
template <typename OutT, bool kStaged, bool kVector, int kCapacity>
__global__ void __launch_bounds__(kDequantThreads)
    kDequantizeNF4(const __grid_constant__ NF4DequantGroup<kCapacity> group, NF4Table table) {
  constexpr int kWords = dOut<OutT>::kWordsPerChunk;
  constexpr int kVecs = kWords / 4;  // 16-byte stores per chunk
  __shared__ float s_nf4[16];
  __shared__ float s_code[256];
  __shared__ uint4 s_stage[kStaged ? kDequantThreads * kVecs : 1];

  // Block-uniform: every thread of a block picks the same weight.
  int w = 0;
  while (w + 1 < group.count && static_cast<int32_t>(blockIdx.x) >= group.first_block[w + 1]) ++w;
  const NF4DequantParams& p = group.weights[w];
  const int log2_blocksize = group.log2_blocksize[w];
  const int64_t block = static_cast<int64_t>(blockIdx.x) - group.first_block[w];
  const int64_t blocks = group.first_block[w + 1] - group.first_block[w];

  if (threadIdx.x < 16) s_nf4[threadIdx.x] = table.value[threadIdx.x];
  if (p.double_quant) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = p.nested_code[i];
  }
  const float offset = p.double_quant ? dLoadResidentFloat(p.offset) : 0.0f;
  __syncthreads();

  const int64_t stride = blocks * blockDim.x;
  const int64_t tid = block * blockDim.x + threadIdx.x;
  const int64_t n_chunks = kVector ? p.numel / kElementsPerChunk : 0;
  const int lane = threadIdx.x % 32;
  uint4* stage = s_stage + (threadIdx.x / 32) * 32 * kVecs;

  // Warp-uniform loop bound (the first lane's chunk), so that the whole warp meets at __syncwarp.
  for (int64_t c = tid; c - lane < n_chunks; c += stride) {
    const bool active = c < n_chunks;
    uint32_t words[kWords];
    if (active) {
      const uint4 bytes = dLoadStreaming(p.packed + c * (kElementsPerChunk / 2));
      const float absmax =
          dBlockAbsmax(p, s_code, (c * kElementsPerChunk) >> log2_blocksize, offset);
      dDequantizeChunk<OutT>(bytes, absmax, s_nf4, words);
    }
    const bool dense = p.row_stride == p.row_length;  // block-uniform
    // The 16-byte word v of chunk k in the output.
    const auto out_word = [&](int64_t k, int v) {
      return reinterpret_cast<uint4*>(static_cast<OutT*>(p.out) + dChunkOutIndex(p, k)) + v;
    };
    uint4* out_chunk0 =
        reinterpret_cast<uint4*>(p.out) + (c - lane) * kVecs;  // the warp's first chunk, if dense
    if constexpr (kStaged) {
      if (active) {
#pragma unroll
        for (int v = 0; v < kVecs; ++v) {
          stage[lane * kVecs + v] =
              make_uint4(words[4 * v], words[4 * v + 1], words[4 * v + 2], words[4 * v + 3]);
        }
      }
      __syncwarp();
#pragma unroll
      for (int v = 0; v < kVecs; ++v) {
        const int slot = v * 32 + lane;
        const int64_t k = (c - lane) + slot / kVecs;
        if (k < n_chunks) {
          dStoreStreaming(dense ? out_chunk0 + slot : out_word(k, slot % kVecs), stage[slot]);
        }
      }
      __syncwarp();
    } else if (active) {
#pragma unroll
      for (int v = 0; v < kVecs; ++v) {
        dStoreStreaming(
            dense ? out_chunk0 + lane * kVecs + v : out_word(c, v),
            make_uint4(words[4 * v], words[4 * v + 1], words[4 * v + 2], words[4 * v + 3]));
      }
    }
  }

  // The tail after the last full chunk (fewer than 32 elements), or everything when unaligned.
  for (int64_t i = n_chunks * kElementsPerChunk + tid; i < p.numel; i += stride) {
    const uint32_t byte = p.packed[i / 2];
    const uint32_t q = (i % 2 == 0) ? (byte >> 4) : (byte & 0x0Fu);
    const float absmax = dBlockAbsmax(p, s_code, i >> log2_blocksize, offset);
    dOut<OutT>::StoreOne(p.out, dOutIndex(p, i), __fmul_rn(s_nf4[q], absmax));
  }
}

}  // namespace qlorad::kernels::cuda
