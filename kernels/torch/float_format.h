// The one place a tensor's dtype becomes the kernels' FloatFormat (kernels/float_format.h), for
// every op's CPU and CUDA plumbing, and the dtype names its messages use.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include <string>

#include "kernels/float_format.h"

namespace qlorad::ops {

// The kernels' format of `dtype` (float32, float16 or bfloat16). Any other dtype fails with a
// message naming the op and the argument: FloatFormatOf(at::kDouble, "qlorad::nf4_dequantize",
// "dtype") throws "qlorad::nf4_dequantize: dtype: expected float32, float16 or bfloat16, got
// float64". The NF4 checks (nf4_checks.cc) validate with it, so check and mapping cannot disagree.
kernels::FloatFormat FloatFormatOf(at::ScalarType dtype, const char* op, const char* arg);

// The names Python users know ("float16"), not c10's ("Half").
std::string DTypeName(at::ScalarType dtype);

// "[4, 2048, 32, 64]": sizes and strides for messages, built from strings (see ce_ops.cc: on the
// GPU machine, streaming an int64 into a TORCH_CHECK message from this library crashed).
std::string DimsText(c10::IntArrayRef dims);

}  // namespace qlorad::ops
