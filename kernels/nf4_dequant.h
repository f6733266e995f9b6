// NF4 dequantization on the GPU: one launch that rebuilds each block's absmax from its 8-bit code
// (double quantization) and expands the packed 4-bit codes to fp16, bf16 or fp32, bit-equal to
// bitsandbytes and to the CPU reference (nf4_ref.h). The hot path of every QLoRA layer, so the
// kernel streams: 16-byte loads of packed bytes and 16-byte stores of the output, both marked
// evict-first (.cs), while the small tables and absmax codes stay cached.
// Torch-free: parameters are raw pointers and sizes; kernels live in nf4_dequant_kernels.cuh and
// the launchers in nf4_dequant.cu.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/status.h"
#include "kernels/float_format.h"

namespace qlorad::kernels {

struct NF4DequantParams {
  const uint8_t* packed = nullptr;  // ceil(numel / 2) bytes, element 2k in the high nibble
  int64_t numel = 0;
  int64_t blocksize = 64;  // power of two in [32, 4096]
  bool double_quant = true;
  const float* absmax = nullptr;          // fp32 [n_blocks], when !double_quant
  const uint8_t* absmax_codes = nullptr;  // uint8 [n_blocks] into nested_code, when double_quant
  const float* nested_absmax = nullptr;   // fp32 [ceil(n_blocks / 256)]
  const float* nested_code = nullptr;     // fp32 [256]
  const float* offset = nullptr;          // fp32 scalar, on the device (read there: no sync)
  void* out = nullptr;                    // numel values of `format`
  FloatFormat format = FloatFormat::kBFloat16;
  // The output's rows (the weight's last dimension): row_length values each, every row starting
  // row_stride values after the one before, so that a weight can land in the first columns of a
  // wider matrix (the LoRA path puts B's columns beside it and runs one GEMM over both).
  // 0 and 0: the numel values lie one after another.
  int64_t row_length = 0;
  int64_t row_stride = 0;
};

// Enqueues the dequantization on `stream`; never synchronizes and allocates nothing, so it can be
// captured in a CUDA graph. Fails on a bad blocksize, a missing pointer or a failed launch.
Status LaunchNF4Dequantize(const NF4DequantParams& p, cudaStream_t stream);

// Most weights one launch serves (its parameter block holds them all: about 1.8 KB).
inline constexpr int kMaxDequantGroup = 16;

// Dequantizes `count` weights in as few launches as possible: one per output format for up to
// kMaxDequantGroup weights (a layer's projections, a gathered FSDP unit), instead of one each.
// Small weights gain the most: no launch gap between them and no half-empty last wave per weight.
// Same guarantees as LaunchNF4Dequantize; an error names the weight's index.
Status LaunchNF4DequantizeMany(const NF4DequantParams* weights, int count, cudaStream_t stream);

}  // namespace qlorad::kernels
