// CPU reference of SwiGLU forward and backward (formulas and layout: swiglu_params.h): the ground
// truth the CUDA kernels are tested against and the CPU implementation of qlorad::swiglu and
// qlorad::swiglu_backward. Torch-free.
#pragma once

#include <cstdint>

#include "kernels/swiglu_params.h"

namespace qlorad::kernels::ref {

// h of rows [begin, end) into p.out (so a caller can split the rows over threads).
void SwigluForwardRows(const SwigluParams& p, int64_t begin, int64_t end);

// dgu of rows [begin, end) into p.out.
void SwigluBackwardRows(const SwigluParams& p, int64_t begin, int64_t end);

}  // namespace qlorad::kernels::ref
