// The online linear + cross-entropy's row state and its lag (algorithm: kernels/ce_online.h), in a
// header without CUDA so that the operator's CPU side builds where there is no CUDA toolkit.
#pragma once

namespace qlorad::kernels {

// The running max moves only when a tile's max exceeds it by more than this (natural-log units).
inline constexpr float kOnlineCeMaxLag = 8.0f;
inline constexpr int kOnlineCeStateWidth = 4;  // m, l, x_t, sum of logits

}  // namespace qlorad::kernels
