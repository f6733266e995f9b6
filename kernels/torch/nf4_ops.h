// C++ entry points of the NF4 torch operators (schemas in nf4_ops.cc, TORCH_LIBRARY(qlorad, m)).
// The trainer calls these; they go through the dispatcher, so the CPU, CUDA or Meta
// implementation runs according to where the tensors live.
//
// Layout (bitsandbytes, blocksize 64 by default):
//   packed      uint8 [ceil(numel / 2)]: element 2k in the high nibble, 2k+1 in the low one
//   absmax      fp32 [n_blocks] (double_quant=false), or
//               uint8 [n_blocks] codes into nested_code (double_quant=true), with
//   nested_absmax fp32 [ceil(n_blocks / 256)], nested_code fp32 [256] (signed dynamic map),
//   offset      fp32 scalar tensor: mean of the absmax values, added back after dequantizing them
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace qlorad::ops {

struct NF4Weight {
  at::Tensor packed;
  at::Tensor absmax;
  at::Tensor nested_absmax;  // undefined unless double_quant
  at::Tensor nested_code;    // undefined unless double_quant
  at::Tensor offset;         // undefined unless double_quant
  std::vector<int64_t> shape;
  int64_t blocksize = 64;
  bool double_quant = true;
  at::ScalarType dtype = at::kBFloat16;  // dtype of the original weight

  int64_t numel() const;
  // Moves every tensor to `device` (the packed bytes travel, never a dequantized copy).
  NF4Weight to(const at::Device& device) const;
};

// Quantizes a floating-point weight (fp32, fp16 or bf16, any shape). NaN or Inf is an error.
NF4Weight QuantizeNF4(const at::Tensor& weight, int64_t blocksize = 64, bool double_quant = true);

// Dequantizes into a new tensor of w.shape and `dtype` (fp32, fp16 or bf16), on w's device.
at::Tensor DequantizeNF4(const NF4Weight& w, at::ScalarType dtype);

// Dequantizes into `out` (contiguous, numel() elements): allocates nothing and never synchronizes.
void DequantizeNF4Out(const NF4Weight& w, at::Tensor& out);

// Dequantizes weights[i] into out[i] (each contiguous, of its weight's numel), all on one device;
// on CUDA in one launch per output format. Allocates nothing and never synchronizes.
void DequantizeNF4ManyOut(const std::vector<const NF4Weight*>& weights, at::TensorList out);

}  // namespace qlorad::ops
