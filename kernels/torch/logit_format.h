// The kernels' LogitFormat of a tensor's dtype (fp16, bf16; anything else is fp32), for the CUDA
// plumbing of the cross-entropy ops.
#pragma once

#include <c10/core/ScalarType.h>

#include "kernels/ce_loss.h"

namespace qlorad::ops {

inline kernels::LogitFormat LogitFormatOf(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return kernels::LogitFormat::kFloat16;
    case at::kBFloat16:
      return kernels::LogitFormat::kBFloat16;
    default:
      return kernels::LogitFormat::kFloat32;
  }
}

}  // namespace qlorad::ops
