#include "kernels/torch/rope_checks.h"

#include <ATen/MemoryOverlap.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "kernels/torch/float_format.h"

namespace qlorad::ops::detail {
namespace {

constexpr const char* kOp = "qlorad::rope_";

void CheckDefined(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), kOp, ": ", name, ": expected a tensor, got None");
}

void CheckDevice(const at::Tensor& t, const char* name, const at::Tensor& q) {
  TORCH_CHECK(t.device() == q.device(), kOp, ": ", name, ": expected a tensor on ",
              q.device().str(), " like q, got one on ", t.device().str());
}

// Whether no two tokens of x [batch, seq, heads, d] share memory: sorted by stride, each of the
// batch and seq dims must step past everything the dims inside it span. Rotated in place, a
// shared element would be rotated twice (in a racy order on CUDA).
bool TokensApart(const at::Tensor& x) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size)
  for (int j : {0, 1}) {
    if (x.size(j) > 1) dims.emplace_back(x.stride(j), x.size(j));
  }
  std::sort(dims.begin(), dims.end());
  int64_t extent = x.size(2) * x.size(3);  // one token's elements
  for (const auto& [stride, size] : dims) {
    if (stride < extent) return false;
    extent += stride * (size - 1);
  }
  return true;
}

// q or k: [batch, seq, heads, d] with heads and head_dim contiguous and tokens apart.
void CheckHeads(const at::Tensor& x, const char* name) {
  CheckDefined(x, name);
  TORCH_CHECK(x.dim() == 4, kOp, ": ", name, ": expected [batch, seq, heads, head_dim], got ",
              DimsText(x.sizes()));
  const int64_t d = x.size(3);
  TORCH_CHECK(d > 0 && d % 2 == 0, kOp, ": ", name, ": head_dim: expected an even number, got ",
              std::to_string(d));
  TORCH_CHECK(x.stride(3) == 1 && (x.size(2) <= 1 || x.stride(2) == d), kOp, ": ", name,
              ": expected heads and head_dim contiguous (strides [*, *, ", std::to_string(d),
              ", 1]), got strides ", DimsText(x.strides()));
  TORCH_CHECK(TokensApart(x), kOp, ": ", name,
              ": expected tokens that do not overlap in memory (it is rotated in place), got "
              "sizes ",
              DimsText(x.sizes()), " and strides ", DimsText(x.strides()));
}

// cos or sin: fp32 [table_rows, d], contiguous.
void CheckTable(const at::Tensor& t, const char* name, const at::Tensor& q) {
  CheckDefined(t, name);
  TORCH_CHECK(t.scalar_type() == at::kFloat, kOp, ": ", name, ": expected float32, got ",
              DTypeName(t.scalar_type()));
  CheckDevice(t, name, q);
  TORCH_CHECK(t.dim() == 2 && t.size(1) == q.size(3), kOp, ": ", name, ": expected [table_rows, ",
              std::to_string(q.size(3)), "] (head_dim of q), got ", DimsText(t.sizes()));
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", name, ": expected a contiguous tensor");
}

}  // namespace

void CheckRopeInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                     const at::Tensor& sin, const std::optional<at::Tensor>& positions) {
  CheckHeads(q, "q");
  CheckHeads(k, "k");
  FloatFormatOf(q.scalar_type(), kOp, "q");
  TORCH_CHECK(k.scalar_type() == q.scalar_type(), kOp, ": k: expected ", DTypeName(q.scalar_type()),
              " like q, got ", DTypeName(k.scalar_type()));
  CheckDevice(k, "k", q);
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3), kOp,
              ": k: expected [", std::to_string(q.size(0)), ", ", std::to_string(q.size(1)),
              ", kv_heads, ", std::to_string(q.size(3)), "] (batch, seq and head_dim of q), got ",
              DimsText(k.sizes()));
  const at::MemOverlapStatus overlap = at::get_overlap_status(q, k);
  TORCH_CHECK(overlap != at::MemOverlapStatus::Full && overlap != at::MemOverlapStatus::Partial,
              kOp, ": q and k: expected separate memory (both are rotated in place)");
  CheckTable(cos, "cos", q);
  CheckTable(sin, "sin", q);
  TORCH_CHECK(sin.size(0) == cos.size(0), kOp, ": sin: expected ", DimsText(cos.sizes()),
              " like cos, got ", DimsText(sin.sizes()));
  if (positions.has_value()) {
    const at::Tensor& pos = *positions;
    CheckDefined(pos, "positions");
    TORCH_CHECK(pos.scalar_type() == at::kLong, kOp, ": positions: expected int64, got ",
                DTypeName(pos.scalar_type()));
    CheckDevice(pos, "positions", q);
    TORCH_CHECK(pos.dim() == 2 && pos.size(0) == q.size(0) && pos.size(1) == q.size(1), kOp,
                ": positions: expected [", std::to_string(q.size(0)), ", ",
                std::to_string(q.size(1)), "] (batch and seq of q), got ", DimsText(pos.sizes()));
  } else {
    TORCH_CHECK(cos.size(0) >= q.size(1), kOp, ": cos: expected at least ",
                std::to_string(q.size(1)),
                " rows (seq of q; without positions token s uses row s), got ",
                std::to_string(cos.size(0)));
  }
}

kernels::RopeParams RopeParamsOf(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                 const at::Tensor& sin, const std::optional<at::Tensor>& positions,
                                 bool inverse) {
  CheckRopeInputs(q, k, cos, sin, positions);
  kernels::RopeParams p;
  p.q = {q.data_ptr(), q.size(2), q.stride(0), q.stride(1)};
  p.k = {k.data_ptr(), k.size(2), k.stride(0), k.stride(1)};
  p.batch = q.size(0);
  p.seq = q.size(1);
  p.head_dim = q.size(3);
  p.format = FloatFormatOf(q.scalar_type(), kOp, "q");
  p.cos = cos.data_ptr<float>();
  p.sin = sin.data_ptr<float>();
  p.table_rows = cos.size(0);
  if (positions.has_value()) {
    p.positions = positions->data_ptr<int64_t>();
    p.positions_batch_stride = positions->stride(0);
    p.positions_seq_stride = positions->stride(1);
  }
  p.inverse = inverse;
  return p;
}

}  // namespace qlorad::ops::detail
