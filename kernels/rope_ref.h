// CPU reference of the fused RoPE, in place or from a source (formulas and layout: rope_params.h):
// the ground truth the CUDA kernel is tested against and the CPU implementation of qlorad::rope_
// and rope_into. Torch-free.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/rope_params.h"

namespace qlorad::kernels::ref {

// Fails, naming the first token, when a position lies outside [0, table_rows). Call it before
// RopeTokens: a wrong position is the caller's bug, and reading past the table is not an answer.
Status CheckRopePositions(const RopeParams& p);

// Rotates the tokens [begin, end) of the flattened [batch * seq], in place or from the sources (so
// a caller can split the tokens over threads). Positions must have passed CheckRopePositions.
void RopeTokens(const RopeParams& p, int64_t begin, int64_t end);

}  // namespace qlorad::kernels::ref
