// The floating-point formats the kernels read and write (weights to quantize, dequantized weights,
// logits and activations): one enum for every launcher's parameters and for the CPU reference, so
// a format chosen once travels unchanged from the torch side to the kernels. On the host, fp16 and
// bf16 values travel as raw 16-bit patterns. Torch-free and CUDA-free: plain C++ only. The mapping
// from a tensor's dtype is kernels/torch/float_format.h.
#pragma once

namespace qlorad::kernels {

enum class FloatFormat { kFloat32, kFloat16, kBFloat16 };

// Bytes of one value.
inline constexpr int FloatFormatBytes(FloatFormat format) {
  return format == FloatFormat::kFloat32 ? 4 : 2;
}

}  // namespace qlorad::kernels
