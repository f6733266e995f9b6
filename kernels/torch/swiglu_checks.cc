#include "kernels/torch/swiglu_checks.h"

#include <string>
#include <vector>

#include "kernels/torch/float_format.h"

namespace qlorad::ops::detail {
namespace {

// The elements between rows of t [..., I] seen as [rows, I]: the leading dims must flatten to one
// index at one stride (each one's stride is the next inner one's times its size, dims of size 1
// aside), as they do for a column slice of a contiguous [..., 2I] buffer.
int64_t RowStrideOf(const char* op, const char* name, const at::Tensor& t) {
  const int64_t n = t.dim();
  TORCH_CHECK(t.size(n - 1) <= 1 || t.stride(n - 1) == 1, op, ": ", name,
              ": expected the last dim contiguous, got strides ", DimsText(t.strides()));
  int64_t row_stride = -1;  // of the innermost leading dim with more than one entry
  int64_t next = 0;         // the stride the next outer such dim must have
  for (int64_t j = n - 2; j >= 0; --j) {
    if (t.size(j) == 1) continue;
    TORCH_CHECK(row_stride < 0 || t.stride(j) == next, op, ": ", name,
                ": expected rows at one stride (leading dims that flatten, as in a column slice "
                "of a contiguous buffer), got sizes ",
                DimsText(t.sizes()), " and strides ", DimsText(t.strides()));
    if (row_stride < 0) row_stride = t.stride(j);
    next = t.stride(j) * t.size(j);
  }
  return row_stride < 0 ? t.size(n - 1) : row_stride;
}

// `t` against gate: defined, same dtype, shape and device.
void CheckLikeGate(const char* op, const char* name, const at::Tensor& t, const at::Tensor& gate) {
  TORCH_CHECK(t.defined(), op, ": ", name, ": expected a tensor, got None");
  TORCH_CHECK(t.scalar_type() == gate.scalar_type(), op, ": ", name, ": expected ",
              DTypeName(gate.scalar_type()), " like gate, got ", DTypeName(t.scalar_type()));
  TORCH_CHECK(t.sizes() == gate.sizes(), op, ": ", name, ": expected shape ",
              DimsText(gate.sizes()), " like gate, got ", DimsText(t.sizes()));
  TORCH_CHECK(t.device() == gate.device(), op, ": ", name, ": expected a tensor on ",
              gate.device().str(), " like gate, got one on ", t.device().str());
  RowStrideOf(op, name, t);
}

}  // namespace

void CheckSwigluInputs(const char* op, const at::Tensor& gate, const at::Tensor& up,
                       const at::Tensor* dh) {
  TORCH_CHECK(gate.defined(), op, ": gate: expected a tensor, got None");
  TORCH_CHECK(gate.dim() >= 1, op, ": gate: expected [..., I], got a scalar");
  FloatFormatOf(gate.scalar_type(), op, "gate");
  RowStrideOf(op, "gate", gate);
  CheckLikeGate(op, "up", up, gate);
  if (dh != nullptr) CheckLikeGate(op, "dh", *dh, gate);
}

at::Tensor SwigluOutputFor(const char* op, const at::Tensor& gate, bool backward,
                           int64_t spare_columns) {
  TORCH_CHECK(spare_columns >= 0, op, ": spare_columns: expected >= 0, got ", spare_columns);
  std::vector<int64_t> sizes = gate.sizes().vec();
  if (backward) sizes.back() *= 2;
  if (backward || spare_columns == 0 || gate.numel() == 0) {
    return at::empty(sizes, gate.options().memory_format(at::MemoryFormat::Contiguous));
  }
  const int64_t cols = gate.size(-1);
  return at::empty({gate.numel() / cols, cols + spare_columns}, gate.options())
      .narrow(1, 0, cols)
      .view(gate.sizes());
}

kernels::SwigluParams SwigluParamsOf(const char* op, const at::Tensor& gate, const at::Tensor& up,
                                     const at::Tensor* dh) {
  CheckSwigluInputs(op, gate, up, dh);
  kernels::SwigluParams p;
  p.cols = gate.size(-1);
  p.rows = p.cols == 0 ? 0 : gate.numel() / p.cols;
  p.format = FloatFormatOf(gate.scalar_type(), op, "gate");
  p.gate = gate.data_ptr();
  p.gate_stride = RowStrideOf(op, "gate", gate);
  p.up = up.data_ptr();
  p.up_stride = RowStrideOf(op, "up", up);
  if (dh != nullptr) {
    p.dh = dh->data_ptr();
    p.dh_stride = RowStrideOf(op, "dh", *dh);
  }
  return p;
}

}  // namespace qlorad::ops::detail
