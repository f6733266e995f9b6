// The ggml number formats a GGUF export writes, as plain CPU code (the reference the export and
// its tests share): IEEE fp16 and q8_0.
//
// q8_0 (ggml's block_q8_0, reference quantize_row_q8_0_ref in ggml-quants.c): a row is cut into
// blocks of 32 values; each block is an fp16 scale d = max|x| / 127 followed by 32 int8 values
// q = round(x / d), rounded half away from zero (roundf), so x ~ d * q. As in ggml, the int8 values
// are computed with the fp32 scale and its reciprocal; only the stored scale is rounded to fp16
// (to nearest even, kernels/nf4_ref.h's FloatToHalfBits, as F16C and numpy do).
// A block of zeros has d = 0 and q = 0.
#pragma once

#include <cstdint>

namespace qlorad::trainer {

constexpr int64_t kQ8_0BlockValues = 32;
constexpr int64_t kQ8_0BlockBytes = 2 + kQ8_0BlockValues;  // fp16 scale + 32 int8

// `n` values (a multiple of 32) into n / 32 blocks of kQ8_0BlockBytes at `out`.
void QuantizeRowQ8_0(const float* x, int64_t n, uint8_t* out);
// The inverse, d * q per value: for tests and for checking an export.
void DequantizeRowQ8_0(const uint8_t* blocks, int64_t n, float* out);

}  // namespace qlorad::trainer
