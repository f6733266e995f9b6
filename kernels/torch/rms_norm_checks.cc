#include "kernels/torch/rms_norm_checks.h"

#include <ATen/TensorUtils.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "kernels/torch/float_format.h"

namespace qlorad::ops::detail {
namespace {

constexpr const char* kBackwardOp = "qlorad::rms_norm_backward";

// A copy of a transposed activation would hide a slow path: refused instead.
void CheckLastDimContiguous(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.stride(-1) == 1 || t.size(-1) == 1, op, ": ", name,
              ": expected the last dimension contiguous (stride 1), got strides ",
              DimsText(t.strides()));
}

// Each check may rely on those before it (defined, then dtype, then sizes, then strides).
int64_t CheckInput(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.defined(), op, ": x: expected a tensor, got None");
  TORCH_CHECK(x.dim() >= 1, op, ": x: expected a tensor [..., hidden], got a scalar");
  FloatFormatOf(x.scalar_type(), op, "x");
  const int64_t hidden = x.size(-1);
  TORCH_CHECK(hidden > 0, op, ": x: expected a non-empty last dimension, got shape ",
              DimsText(x.sizes()));
  CheckLastDimContiguous(op, "x", x);
  return hidden;
}

// Same dtype, shape and device as x.
void CheckLikeX(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.defined(), op, ": ", name, ": expected a tensor, got None");
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, ": expected ",
              DTypeName(x.scalar_type()), " like x, got ", DTypeName(t.scalar_type()));
  TORCH_CHECK(t.sizes() == x.sizes(), op, ": ", name, ": expected shape ", DimsText(x.sizes()),
              " like x, got ", DimsText(t.sizes()));
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, ": expected a tensor on ", x.device().str(),
              " like x, got one on ", t.device().str());
}

void CheckWeight(const char* op, const at::Tensor& weight, const at::Tensor& x, int64_t hidden) {
  TORCH_CHECK(weight.defined(), op, ": weight: expected a tensor, got None");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight: expected ",
              DTypeName(x.scalar_type()), " like x, got ", DTypeName(weight.scalar_type()));
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == hidden, op, ": weight: expected shape [",
              std::to_string(hidden), "], got ", DimsText(weight.sizes()));
  TORCH_CHECK(weight.device() == x.device(), op, ": weight: expected a tensor on ",
              x.device().str(), " like x, got one on ", weight.device().str());
}

// Whether t's [rows, hidden] rows are evenly spaced, each contiguous, wider apart than hidden:
// then that spacing (what a view of t as [rows, hidden] would have as its first stride).
std::optional<int64_t> SpacedRowStride(const at::Tensor& t, int64_t rows, int64_t hidden) {
  if (t.is_contiguous() || rows < 2) return std::nullopt;
  const std::vector<int64_t> shape = {rows, hidden};
  const std::optional<std::vector<int64_t>> strides =
      at::detail::computeStride(t.sizes(), t.strides(), at::IntArrayRef(shape));
  if (!strides || (*strides)[1] != 1 || (*strides)[0] < hidden) return std::nullopt;
  return (*strides)[0];
}

at::Tensor Like(const at::Tensor& x) {
  return at::empty(x.sizes(), x.options());
}

}  // namespace

RmsNormForwardTensors PrepareRmsNormForward(const char* op, const at::Tensor& x,
                                            const at::Tensor& residual, const at::Tensor& weight,
                                            double eps, int64_t spare_columns) {
  RmsNormForwardTensors t;
  t.hidden = CheckInput(op, x);
  t.rows = x.numel() / t.hidden;
  CheckWeight(op, weight, x, t.hidden);
  TORCH_CHECK(std::isfinite(eps) && eps >= 0, op, ": eps: expected a finite value >= 0, got ",
              std::to_string(eps));
  TORCH_CHECK(spare_columns >= 0, op, ": spare_columns: expected >= 0, got ",
              std::to_string(spare_columns));
  if (residual.defined()) {
    CheckLikeX(op, "residual", residual, x);
    CheckLastDimContiguous(op, "residual", residual);
  }
  // Contiguous already in the trainer; a copy only for leading dimensions that are not.
  t.x = x.contiguous();
  t.weight = weight.contiguous();
  if (residual.defined()) {
    t.residual = residual.contiguous();
    t.h = Like(t.x);
  }
  if (spare_columns == 0) {
    t.y = Like(t.x);
  } else {
    t.y_row_stride = t.hidden + spare_columns;
    t.y = at::empty({t.rows, t.y_row_stride}, x.options()).narrow(1, 0, t.hidden).view(x.sizes());
  }
  t.inv_rms = at::empty({t.rows}, x.options().dtype(at::kFloat));
  return t;
}

RmsNormBackwardTensors PrepareRmsNormBackward(const at::Tensor& dy, const at::Tensor& x,
                                              const at::Tensor& weight, const at::Tensor& inv_rms,
                                              const std::optional<at::Tensor>& dresidual) {
  const char* op = kBackwardOp;
  RmsNormBackwardTensors t;
  t.hidden = CheckInput(op, x);
  t.rows = x.numel() / t.hidden;
  CheckWeight(op, weight, x, t.hidden);
  CheckLikeX(op, "dy", dy, x);
  TORCH_CHECK(inv_rms.defined(), op, ": inv_rms: expected a tensor, got None");
  TORCH_CHECK(inv_rms.scalar_type() == at::kFloat, op, ": inv_rms: expected float32, got ",
              DTypeName(inv_rms.scalar_type()));
  TORCH_CHECK(inv_rms.dim() == 1 && inv_rms.size(0) == t.rows, op, ": inv_rms: expected shape [",
              std::to_string(t.rows), "], got ", DimsText(inv_rms.sizes()));
  TORCH_CHECK(inv_rms.device() == x.device(), op, ": inv_rms: expected a tensor on ",
              x.device().str(), " like x, got one on ", inv_rms.device().str());
  const bool with_residual = dresidual.has_value() && dresidual->defined();
  if (with_residual) CheckLikeX(op, "dresidual", *dresidual, x);
  // Gradients may come with any strides (autograd hands on expanded or transposed ones): they are
  // made contiguous rather than refused, unless their rows are merely spaced wider than hidden (a
  // folded LoRA projection's dX: the first columns of a wider matrix), which the kernels read in
  // place.
  const std::optional<int64_t> row_stride = SpacedRowStride(dy, t.rows, t.hidden);
  t.dy = row_stride ? dy : dy.contiguous();
  t.dy_row_stride = row_stride.value_or(0);
  t.x = x.contiguous();
  t.weight = weight.contiguous();
  t.inv_rms = inv_rms.contiguous();
  if (with_residual) t.dresidual = dresidual->contiguous();
  t.dx = Like(t.x);
  return t;
}

kernels::RmsNormForwardParams ForwardParams(const RmsNormForwardTensors& t, double eps) {
  kernels::RmsNormForwardParams p;
  p.x = t.x.const_data_ptr();
  p.residual = t.residual.defined() ? t.residual.const_data_ptr() : nullptr;
  p.h = t.h.defined() ? t.h.data_ptr() : nullptr;
  p.weight = t.weight.const_data_ptr();
  p.y = t.y.data_ptr();
  p.y_row_stride = t.y_row_stride;
  p.inv_rms = t.inv_rms.data_ptr<float>();
  p.rows = t.rows;
  p.hidden = t.hidden;
  p.eps = static_cast<float>(eps);
  p.format = FloatFormatOf(t.x.scalar_type(), "qlorad::rms_norm", "x");
  return p;
}

kernels::RmsNormBackwardParams BackwardParams(const RmsNormBackwardTensors& t) {
  kernels::RmsNormBackwardParams p;
  p.dy = t.dy.const_data_ptr();
  p.x = t.x.const_data_ptr();
  p.weight = t.weight.const_data_ptr();
  p.inv_rms = t.inv_rms.const_data_ptr<float>();
  p.dresidual = t.dresidual.defined() ? t.dresidual.const_data_ptr() : nullptr;
  p.dx = t.dx.data_ptr();
  p.rows = t.rows;
  p.hidden = t.hidden;
  p.dy_row_stride = t.dy_row_stride;
  p.format = FloatFormatOf(t.x.scalar_type(), kBackwardOp, "x");
  return p;
}

}  // namespace qlorad::ops::detail
