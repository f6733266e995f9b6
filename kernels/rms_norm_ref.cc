#include "kernels/rms_norm_ref.h"

#include <cmath>

#include "kernels/float_ref.h"

namespace qlorad::kernels::ref {
namespace {

// 1 / sqrtf, both correctly rounded, as the CUDA kernel computes it (not rsqrtf); see
// rms_norm_kernels.cuh for how this differs from torch.rsqrt.
float InvRms(double sum_squares, int64_t hidden, float eps) {
  return 1.0f / std::sqrt(static_cast<float>(sum_squares) / static_cast<float>(hidden) + eps);
}

}  // namespace

void RmsNormForwardRows(const RmsNormForwardParams& p, int64_t row_begin, int64_t row_end) {
  const int64_t n = p.hidden;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t row = r * n;
    // With a residual, h is written first and read back: the row is normalized as stored.
    const void* h = p.x;
    if (p.residual != nullptr) {
      for (int64_t j = row; j < row + n; ++j) {
        StoreFloat(p.format, p.h, j,
                   LoadFloat(p.format, p.x, j) + LoadFloat(p.format, p.residual, j));
      }
      h = p.h;
    }
    double sum_squares = 0;
    for (int64_t j = row; j < row + n; ++j) {
      const double v = LoadFloat(p.format, h, j);
      sum_squares += v * v;
    }
    const float inv = InvRms(sum_squares, n, p.eps);
    p.inv_rms[r] = inv;
    const int64_t y_row = r * (p.y_row_stride > 0 ? p.y_row_stride : n);
    for (int64_t j = 0; j < n; ++j) {
      const float normed = RoundTo(p.format, LoadFloat(p.format, h, row + j) * inv);
      StoreFloat(p.format, p.y, y_row + j, LoadFloat(p.format, p.weight, j) * normed);
    }
  }
}

void RmsNormBackwardRows(const RmsNormBackwardParams& p, int64_t row_begin, int64_t row_end) {
  const int64_t n = p.hidden;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t row = r * n;
    const int64_t dy_row = r * (p.dy_row_stride > 0 ? p.dy_row_stride : n);
    const float inv = p.inv_rms[r];
    double dot = 0;
    for (int64_t j = 0; j < n; ++j) {
      const float g = LoadFloat(p.format, p.dy, dy_row + j) * LoadFloat(p.format, p.weight, j);
      dot += static_cast<double>(g) * static_cast<double>(LoadFloat(p.format, p.x, row + j) * inv);
    }
    const float c = static_cast<float>(dot) / static_cast<float>(n);
    for (int64_t j = 0; j < n; ++j) {
      const float g = LoadFloat(p.format, p.dy, dy_row + j) * LoadFloat(p.format, p.weight, j);
      const float normed = LoadFloat(p.format, p.x, row + j) * inv;
      float dx = inv * (g - normed * c);
      if (p.dresidual != nullptr) dx += LoadFloat(p.format, p.dresidual, row + j);
      StoreFloat(p.format, p.dx, row + j, dx);
    }
  }
}

}  // namespace qlorad::kernels::ref
