#include "kernels/swiglu_ref.h"

#include "kernels/float_ref.h"

namespace qlorad::kernels::ref {

void SwigluForwardRows(const SwigluParams& p, int64_t begin, int64_t end) {
  const auto round = [&](float x) { return RoundTo(p.format, x); };
  const int64_t out_stride = p.out_stride > 0 ? p.out_stride : p.cols;
  for (int64_t r = begin; r < end; ++r) {
    for (int64_t c = 0; c < p.cols; ++c) {
      const float g = LoadFloat(p.format, p.gate, r * p.gate_stride + c);
      const float u = LoadFloat(p.format, p.up, r * p.up_stride + c);
      StoreFloat(p.format, p.out, r * out_stride + c, SwigluOf(g, u, round));
    }
  }
}

void SwigluBackwardRows(const SwigluParams& p, int64_t begin, int64_t end) {
  const auto round = [&](float x) { return RoundTo(p.format, x); };
  for (int64_t r = begin; r < end; ++r) {
    for (int64_t c = 0; c < p.cols; ++c) {
      const float dh = LoadFloat(p.format, p.dh, r * p.dh_stride + c);
      const float g = LoadFloat(p.format, p.gate, r * p.gate_stride + c);
      const float u = LoadFloat(p.format, p.up, r * p.up_stride + c);
      float dgate = 0.0f;
      float dup = 0.0f;
      SwigluGradOf(dh, g, u, round, dgate, dup);
      StoreFloat(p.format, p.out, r * 2 * p.cols + c, dgate);
      StoreFloat(p.format, p.out, r * 2 * p.cols + p.cols + c, dup);
      if (p.h_out != nullptr) StoreFloat(p.format, p.h_out, r * p.cols + c, SwigluOf(g, u, round));
    }
  }
}

}  // namespace qlorad::kernels::ref
