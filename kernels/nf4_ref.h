// CPU reference of NF4 quantization and dequantization, bit-exact with bitsandbytes' CUDA kernels
// (same normalization, same decision rules, same rounding steps). It is the ground truth the CUDA
// kernels are tested against, the CPU implementation of the qlorad torch ops, and what CI runs.
// Torch-free: plain pointers and sizes. Layout and constants: nf4_format.h.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/float_format.h"

namespace qlorad::kernels::ref {

// Rounds to nearest, ties to even, as CUDA's __float2half_rn / __float2bfloat16_rn do.
uint16_t FloatToHalfBits(float x);
uint16_t FloatToBFloat16Bits(float x);
float HalfBitsToFloat(uint16_t h);
float BFloat16BitsToFloat(uint16_t b);

// OK when blocksize is a power of two in [kMinBlocksize, kMaxBlocksize].
Status CheckBlocksize(int64_t blocksize);
int64_t NumBlocks(int64_t numel, int64_t blocksize);
inline int64_t PackedBytes(int64_t numel) {
  return (numel + 1) / 2;
}

// The 4-bit code bitsandbytes gives to an already normalized value (x * (1 / absmax)).
uint8_t NF4CodeOf(float normalized);

// The 8-bit code bitsandbytes' blockwise quantizer gives to a normalized value: a binary search
// over the sorted 256-entry `code` table, then the nearer of the two neighbours by comparing with
// their float midpoint (a tie goes to the entry the search ended on). NaN gets code 0.
uint8_t DynamicCodeOf(const float* code, float normalized);

// Quantizes `numel` weights: packed[PackedBytes(numel)], absmax[NumBlocks(numel, blocksize)].
// A last partial block is padded with zeros, as bitsandbytes does; for an odd numel the low nibble
// of the last byte is the code of that padding. Fails, naming the index, on a NaN or infinite
// weight.
Status QuantizeNF4(const float* weight, int64_t numel, int64_t blocksize, uint8_t* packed,
                   float* absmax);

// The error for a weight that NF4 cannot quantize (CPU and CUDA report it the same way).
Status NonFiniteWeight(int64_t index, bool is_nan);

// Mean of the absmax values (the double-quantization offset), summed in double. bitsandbytes takes
// torch's mean, whose summation order differs per device; the torch ops pass torch's own value.
float MeanOf(const float* values, int64_t n);

// Double quantization of absmax: blockwise 8-bit of (absmax[i] - offset), blocks of
// kNestedBlocksize, with the 256-entry `code` table (kDynamicMapSigned for new weights).
// Writes codes[n_blocks] and nested_absmax[NumBlocks(n_blocks, kNestedBlocksize)].
void DoubleQuantizeAbsmax(const float* absmax, int64_t n_blocks, float offset, const float* code,
                          uint8_t* codes, float* nested_absmax);

// A quantized weight as the dequantizer reads it. With double_quant, absmax_codes/nested_absmax/
// nested_code/offset are used and absmax is ignored; without it, the reverse.
struct NF4View {
  const uint8_t* packed = nullptr;
  int64_t numel = 0;
  int64_t blocksize = 64;
  bool double_quant = false;
  const float* absmax = nullptr;
  const uint8_t* absmax_codes = nullptr;
  const float* nested_absmax = nullptr;
  const float* nested_code = nullptr;
  float offset = 0.0f;
};

// The absmax of block b as bitsandbytes rebuilds it: nested_code[c] * nested_absmax, rounded to
// fp32, then + offset, rounded again (its 8-bit dequantize kernel, then a separate torch add).
float BlockAbsmax(const NF4View& w, int64_t block);

// Dequantizes w into out (numel values of `format`: float, or uint16_t bit patterns for fp16/bf16).
// Each value is kNF4Code[q] * absmax rounded to fp32, then rounded to the output format.
Status DequantizeNF4(const NF4View& w, FloatFormat format, void* out);

}  // namespace qlorad::kernels::ref
