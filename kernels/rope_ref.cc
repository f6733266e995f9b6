#include "kernels/rope_ref.h"

#include <string>

#include "kernels/float_ref.h"

namespace qlorad::kernels::ref {
namespace {

void RotateHeads(const RopeParams& p, const RopeHeads& x, int64_t b, int64_t s, const float* cos,
                 const float* sin) {
  const int64_t half = p.head_dim / 2;
  for (int64_t h = 0; h < x.heads; ++h) {
    const int64_t head = b * x.batch_stride + s * x.seq_stride + h * p.head_dim;
    const void* from = x.source != nullptr ? x.source : x.data;
    const int64_t from_head =
        x.source != nullptr
            ? b * x.source_batch_stride + s * x.source_seq_stride + h * x.source_head_stride
            : head;
    for (int64_t i = 0; i < half; ++i) {
      float x1 = LoadFloat(p.format, from, from_head + i);
      float x2 = LoadFloat(p.format, from, from_head + i + half);
      RotatePair(x1, x2, cos[i], cos[i + half], sin[i], sin[i + half], p.inverse);
      StoreFloat(p.format, x.data, head + i, x1);
      StoreFloat(p.format, x.data, head + i + half, x2);
    }
  }
}

}  // namespace

Status CheckRopePositions(const RopeParams& p) {
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t s = 0; s < p.seq; ++s) {
      const int64_t row = RopeTableRow(p, b, s);
      if (row < 0 || row >= p.table_rows) {
        return InvalidArgument("positions[" + std::to_string(b) + ", " + std::to_string(s) +
                               "] = " + std::to_string(row) + " is outside the table's " +
                               std::to_string(p.table_rows) + " rows");
      }
    }
  }
  return Status::Ok();
}

void RopeTokens(const RopeParams& p, int64_t begin, int64_t end) {
  for (int64_t t = begin; t < end; ++t) {
    const int64_t b = t / p.seq;
    const int64_t s = t % p.seq;
    const int64_t row = RopeTableRow(p, b, s);
    const float* cos = p.cos + row * p.head_dim;
    const float* sin = p.sin + row * p.head_dim;
    RotateHeads(p, p.q, b, s, cos, sin);
    RotateHeads(p, p.k, b, s, cos, sin);
  }
}

}  // namespace qlorad::kernels::ref
