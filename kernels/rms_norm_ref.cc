#include "kernels/rms_norm_ref.h"

#include <cmath>

#include "kernels/nf4_ref.h"

namespace qlorad::kernels::ref {
namespace {

// fp16 and bf16 travel as raw 16-bit patterns (float_format.h); conversions round to nearest even
// as CUDA's __float2half_rn / __float2bfloat16_rn (and torch's casts) do.
float Load(const void* base, int64_t i, FloatFormat format) {
  switch (format) {
    case FloatFormat::kFloat16:
      return HalfBitsToFloat(static_cast<const uint16_t*>(base)[i]);
    case FloatFormat::kBFloat16:
      return BFloat16BitsToFloat(static_cast<const uint16_t*>(base)[i]);
    case FloatFormat::kFloat32:
      break;
  }
  return static_cast<const float*>(base)[i];
}

void Store(void* base, int64_t i, FloatFormat format, float v) {
  switch (format) {
    case FloatFormat::kFloat16:
      static_cast<uint16_t*>(base)[i] = FloatToHalfBits(v);
      return;
    case FloatFormat::kBFloat16:
      static_cast<uint16_t*>(base)[i] = FloatToBFloat16Bits(v);
      return;
    case FloatFormat::kFloat32:
      static_cast<float*>(base)[i] = v;
      return;
  }
}

// v rounded to `format` and widened back: the value a tensor of that dtype would hold.
float Round(float v, FloatFormat format) {
  switch (format) {
    case FloatFormat::kFloat16:
      return HalfBitsToFloat(FloatToHalfBits(v));
    case FloatFormat::kBFloat16:
      return BFloat16BitsToFloat(FloatToBFloat16Bits(v));
    case FloatFormat::kFloat32:
      break;
  }
  return v;
}

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
        Store(p.h, j, p.format, Load(p.x, j, p.format) + Load(p.residual, j, p.format));
      }
      h = p.h;
    }
    double sum_squares = 0;
    for (int64_t j = row; j < row + n; ++j) {
      const double v = Load(h, j, p.format);
      sum_squares += v * v;
    }
    const float inv = InvRms(sum_squares, n, p.eps);
    p.inv_rms[r] = inv;
    for (int64_t j = 0; j < n; ++j) {
      const float normed = Round(Load(h, row + j, p.format) * inv, p.format);
      Store(p.y, row + j, p.format, Load(p.weight, j, p.format) * normed);
    }
  }
}

void RmsNormBackwardRows(const RmsNormBackwardParams& p, int64_t row_begin, int64_t row_end) {
  const int64_t n = p.hidden;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t row = r * n;
    const float inv = p.inv_rms[r];
    double dot = 0;
    for (int64_t j = 0; j < n; ++j) {
      const float g = Load(p.dy, row + j, p.format) * Load(p.weight, j, p.format);
      dot += static_cast<double>(g) * static_cast<double>(Load(p.x, row + j, p.format) * inv);
    }
    const float c = static_cast<float>(dot) / static_cast<float>(n);
    for (int64_t j = 0; j < n; ++j) {
      const float g = Load(p.dy, row + j, p.format) * Load(p.weight, j, p.format);
      const float normed = Load(p.x, row + j, p.format) * inv;
      float dx = inv * (g - normed * c);
      if (p.dresidual != nullptr) dx += Load(p.dresidual, row + j, p.format);
      Store(p.dx, row + j, p.format, dx);
    }
  }
}

}  // namespace qlorad::kernels::ref
