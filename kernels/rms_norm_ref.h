// CPU reference of the fused RMSNorm (formulas: rms_norm_params.h): the CPU implementation of the
// qlorad::rms_norm ops and the ground truth the CUDA kernels are tested against. Sums of a row are
// accumulated in double and rounded to fp32 once, so the reference is the exactly summed value of
// what the kernels sum in fp32. Torch-free and CUDA-free: plain pointers and sizes.
#pragma once

#include <cstdint>

#include "kernels/rms_norm_params.h"

namespace qlorad::kernels::ref {

// Computes rows [row_begin, row_end) of p (callers split rows across threads).
void RmsNormForwardRows(const RmsNormForwardParams& p, int64_t row_begin, int64_t row_end);
void RmsNormBackwardRows(const RmsNormBackwardParams& p, int64_t row_begin, int64_t row_end);

}  // namespace qlorad::kernels::ref
