// The NF4 storage format of bitsandbytes (4-bit NormalFloat, QLoRA), as constants shared by the CPU
// reference and the CUDA kernels. Facts of the format, so that our bytes equal bitsandbytes' bytes:
//   - weights are cut into blocks of `blocksize` elements (64 by default); each block keeps its
//   fp32
//     absmax, and an element x becomes the 4-bit code nearest to x * (1 / absmax);
//   - two codes per byte: element 2k in the high nibble, element 2k+1 in the low one;
//   - double quantization codes the absmax values themselves: subtract their mean (the offset),
//   then
//     blockwise 8-bit with the signed dynamic map (nf4_dynamic_map.h) in blocks of 256.
// Torch-free and CUDA-free: plain constants only.
#pragma once

#include <cstdint>

namespace qlorad::kernels {

inline constexpr int64_t kDefaultBlocksize = 64;
inline constexpr int64_t kMinBlocksize = 32;
inline constexpr int64_t kMaxBlocksize = 4096;
// Blocks of absmax values that share one nested absmax under double quantization.
inline constexpr int64_t kNestedBlocksize = 256;

// The 16 NF4 values (quantiles of N(0, 1) scaled to [-1, 1]), index = 4-bit code.
inline constexpr float kNF4Code[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// bitsandbytes decides codes with these thresholds (midpoints of neighbouring codes, written as
// decimal literals and rounded to float), not with a nearest-value search: a normalized x gets the
// number of thresholds strictly below it. Ties therefore go to the lower code, and NaN (0 * inf
// from an all-zero block) gets code 0.
inline constexpr float kNF4Thresholds[15] = {
    -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,   -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,    0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f,
};

}  // namespace qlorad::kernels
