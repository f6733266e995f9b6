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
constexpr const char* kIntoOp = "qlorad::rope_into";

void CheckDefined(const at::Tensor& t, const char* name, const char* op = kOp) {
  TORCH_CHECK(t.defined(), op, ": ", name, ": expected a tensor, got None");
}

void CheckDevice(const at::Tensor& t, const char* name, const at::Tensor& q, const char* op = kOp) {
  TORCH_CHECK(t.device() == q.device(), op, ": ", name, ": expected a tensor on ", q.device().str(),
              " like q, got one on ", t.device().str());
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

// q or k (rope_into: q_out or k_out): [batch, seq, heads, d] with heads and head_dim contiguous
// and tokens apart.
void CheckHeads(const at::Tensor& x, const char* name, const char* op = kOp) {
  CheckDefined(x, name, op);
  TORCH_CHECK(x.dim() == 4, op, ": ", name, ": expected [batch, seq, heads, head_dim], got ",
              DimsText(x.sizes()));
  const int64_t d = x.size(3);
  TORCH_CHECK(d > 0 && d % 2 == 0, op, ": ", name, ": head_dim: expected an even number, got ",
              std::to_string(d));
  TORCH_CHECK(x.stride(3) == 1 && (x.size(2) <= 1 || x.stride(2) == d), op, ": ", name,
              ": expected heads and head_dim contiguous (strides [*, *, ", std::to_string(d),
              ", 1]), got strides ", DimsText(x.strides()));
  TORCH_CHECK(TokensApart(x), op, ": ", name,
              ": expected tokens that do not overlap in memory (it is written), got sizes ",
              DimsText(x.sizes()), " and strides ", DimsText(x.strides()));
}

// rope_into's source `x` for the output `out`: out's sizes and dtype, head_dim contiguous.
void CheckSource(const at::Tensor& x, const char* name, const at::Tensor& out,
                 const char* out_name) {
  CheckDefined(x, name, kIntoOp);
  TORCH_CHECK(x.sizes() == out.sizes(), kIntoOp, ": ", name, ": expected ", DimsText(out.sizes()),
              " like ", out_name, ", got ", DimsText(x.sizes()));
  TORCH_CHECK(x.scalar_type() == out.scalar_type(), kIntoOp, ": ", name, ": expected ",
              DTypeName(out.scalar_type()), " like ", out_name, ", got ",
              DTypeName(x.scalar_type()));
  CheckDevice(x, name, out, kIntoOp);
  TORCH_CHECK(x.stride(3) == 1, kIntoOp, ": ", name,
              ": expected head_dim contiguous (last stride 1), got strides ",
              DimsText(x.strides()));
}

bool SharesMemory(const at::Tensor& a, const at::Tensor& b) {
  const at::MemOverlapStatus overlap = at::get_overlap_status(a, b);
  return overlap == at::MemOverlapStatus::Full || overlap == at::MemOverlapStatus::Partial;
}

// cos or sin: fp32 [table_rows, d], contiguous.
void CheckTable(const at::Tensor& t, const char* name, const at::Tensor& q, const char* op) {
  CheckDefined(t, name, op);
  TORCH_CHECK(t.scalar_type() == at::kFloat, op, ": ", name, ": expected float32, got ",
              DTypeName(t.scalar_type()));
  CheckDevice(t, name, q, op);
  TORCH_CHECK(t.dim() == 2 && t.size(1) == q.size(3), op, ": ", name, ": expected [table_rows, ",
              std::to_string(q.size(3)), "] (head_dim of q), got ", DimsText(t.sizes()));
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, ": expected a contiguous tensor");
}

}  // namespace

namespace {

// The names a rotation's two tensors go by in messages: rope_'s q and k, rope_into's outputs.
struct Names {
  const char* op;
  const char* q;
  const char* k;
};

// rope_'s checks of q, k, the tables and positions (rope_into: of its outputs).
void CheckRotated(const Names& n, const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                  const at::Tensor& sin, const std::optional<at::Tensor>& positions) {
  const char* op = n.op;
  CheckHeads(q, n.q, op);
  CheckHeads(k, n.k, op);
  FloatFormatOf(q.scalar_type(), op, n.q);
  TORCH_CHECK(k.scalar_type() == q.scalar_type(), op, ": ", n.k, ": expected ",
              DTypeName(q.scalar_type()), " like ", n.q, ", got ", DTypeName(k.scalar_type()));
  CheckDevice(k, n.k, q, op);
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3), op, ": ",
              n.k, ": expected [", std::to_string(q.size(0)), ", ", std::to_string(q.size(1)),
              ", kv_heads, ", std::to_string(q.size(3)), "] (batch, seq and head_dim of ", n.q,
              "), got ", DimsText(k.sizes()));
  TORCH_CHECK(!SharesMemory(q, k), op, ": ", n.q, " and ", n.k,
              ": expected separate memory (both are written)");
  CheckTable(cos, "cos", q, op);
  CheckTable(sin, "sin", q, op);
  TORCH_CHECK(sin.size(0) == cos.size(0), op, ": sin: expected ", DimsText(cos.sizes()),
              " like cos, got ", DimsText(sin.sizes()));
  if (positions.has_value()) {
    const at::Tensor& pos = *positions;
    CheckDefined(pos, "positions", op);
    TORCH_CHECK(pos.scalar_type() == at::kLong, op, ": positions: expected int64, got ",
                DTypeName(pos.scalar_type()));
    CheckDevice(pos, "positions", q, op);
    TORCH_CHECK(pos.dim() == 2 && pos.size(0) == q.size(0) && pos.size(1) == q.size(1), op,
                ": positions: expected [", std::to_string(q.size(0)), ", ",
                std::to_string(q.size(1)), "] (batch and seq of ", n.q, "), got ",
                DimsText(pos.sizes()));
  } else {
    TORCH_CHECK(cos.size(0) >= q.size(1), op, ": cos: expected at least ",
                std::to_string(q.size(1)), " rows (seq of ", n.q,
                "; without positions token s uses row s), got ", std::to_string(cos.size(0)));
  }
}

// Whether any byte `a` spans lies within `b`'s span in one storage: get_overlap_status gives up
// ("too hard") on tensors that are not dense, such as rope_into's outputs (heads of one q|k|v
// gradient), so this compares the spans instead. It may refuse interleaved tensors that never
// touch, never pass ones that do.
bool SpansOverlap(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0) return false;
  if (!a.storage().is_alias_of(b.storage())) return false;
  const auto span = [](const at::Tensor& t) {
    int64_t last = 0;
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    const int64_t begin = t.storage_offset() * t.element_size();
    return std::pair<int64_t, int64_t>{begin, begin + (last + 1) * t.element_size()};
  };
  const auto [a_begin, a_end] = span(a);
  const auto [b_begin, b_end] = span(b);
  return a_begin < b_end && b_begin < a_end;
}

}  // namespace

void CheckRopeInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                     const at::Tensor& sin, const std::optional<at::Tensor>& positions) {
  CheckRotated({kOp, "q", "k"}, q, k, cos, sin, positions);
}

namespace {

// The kernels' description of a rotation of q and k (pointers into the tensors' memory), checked.
kernels::RopeParams ParamsOf(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                             const at::Tensor& sin, const std::optional<at::Tensor>& positions,
                             bool inverse) {
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

}  // namespace

kernels::RopeParams RopeParamsOf(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                 const at::Tensor& sin, const std::optional<at::Tensor>& positions,
                                 bool inverse) {
  CheckRopeInputs(q, k, cos, sin, positions);
  return ParamsOf(q, k, cos, sin, positions, inverse);
}

void CheckRopeIntoInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                         const at::Tensor& sin, const std::optional<at::Tensor>& positions,
                         const at::Tensor& q_out, const at::Tensor& k_out) {
  CheckHeads(q_out, "q_out", kIntoOp);
  CheckHeads(k_out, "k_out", kIntoOp);
  CheckSource(q, "q", q_out, "q_out");
  CheckSource(k, "k", k_out, "k_out");
  for (const at::Tensor* out : {&q_out, &k_out}) {
    for (const at::Tensor* source : {&q, &k}) {
      TORCH_CHECK(!SpansOverlap(*out, *source), kIntoOp,
                  ": q_out and k_out: expected memory apart from q and k (rope_ rotates in place)");
    }
  }
  // The rest as rope_ checks its q and k (the outputs here): dtype, shapes, tables, positions.
  CheckRotated({kIntoOp, "q_out", "k_out"}, q_out, k_out, cos, sin, positions);
}

kernels::RopeParams RopeIntoParamsOf(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& cos, const at::Tensor& sin,
                                     const std::optional<at::Tensor>& positions, bool inverse,
                                     const at::Tensor& q_out, const at::Tensor& k_out) {
  CheckRopeIntoInputs(q, k, cos, sin, positions, q_out, k_out);
  kernels::RopeParams p = ParamsOf(q_out, k_out, cos, sin, positions, inverse);
  p.q.source = q.data_ptr();
  p.q.source_batch_stride = q.stride(0);
  p.q.source_seq_stride = q.stride(1);
  p.q.source_head_stride = q.stride(2);
  p.k.source = k.data_ptr();
  p.k.source_batch_stride = k.stride(0);
  p.k.source_seq_stride = k.stride(1);
  p.k.source_head_stride = k.stride(2);
  return p;
}

}  // namespace qlorad::ops::detail
