#include "kernels/torch/float_format.h"

#include <c10/util/Exception.h>

namespace qlorad::ops {

kernels::FloatFormat FloatFormatOf(at::ScalarType dtype, const char* op, const char* arg) {
  switch (dtype) {
    case at::kFloat:
      return kernels::FloatFormat::kFloat32;
    case at::kHalf:
      return kernels::FloatFormat::kFloat16;
    case at::kBFloat16:
      return kernels::FloatFormat::kBFloat16;
    default:
      TORCH_CHECK(false, op, ": ", arg, ": expected float32, float16 or bfloat16, got ",
                  DTypeName(dtype));
  }
}

std::string DTypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kByte:
      return "uint8";
    case at::kFloat:
      return "float32";
    case at::kHalf:
      return "float16";
    case at::kBFloat16:
      return "bfloat16";
    case at::kDouble:
      return "float64";
    case at::kLong:
      return "int64";
    default:
      return c10::toString(dtype);
  }
}

std::string DimsText(c10::IntArrayRef dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i == 0 ? "" : ", ") + std::to_string(dims[i]);
  return out + "]";
}

}  // namespace qlorad::ops
