// The fused cross-entropy's schema, its validation, its Meta implementation and the C++ API of
// ce_ops.h. A fragment of the qlorad library, whose main block lives in nf4_ops.cc.
#include "kernels/torch/ce_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>

TORCH_LIBRARY_FRAGMENT(qlorad, m) {
  // Mutates logits into their gradient and returns the per-row loss (a new tensor, never an
  // alias, so torch.compile can functionalize it).
  m.def(
      "ce_loss_grad_(Tensor(a!) logits, Tensor labels, int ignore_index=-100, "
      "float label_smoothing=0.0, float z_loss=0.0, float grad_scale=1.0) -> Tensor");
}

namespace qlorad::ops {

namespace detail {

namespace {

// "[3, 10]". The messages below carry numbers only as strings: on the GPU machine (Ubuntu 24.04,
// g++ 13.3) streaming an int64 into a TORCH_CHECK message from this library crashed inside
// libstdc++'s integer insertion (tests/gpu/test_ce_ops.py), while strings went through.
std::string Dims(at::IntArrayRef dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    out += (i == 0 ? "" : ", ") + std::to_string(dims[i]);
  }
  return out + "]";
}

}  // namespace

void CheckCrossEntropyInputs(const at::Tensor& logits, const at::Tensor& labels) {
  // Metadata only, and every check before any implementation touches data, builds a guard or
  // reads a stride-derived address: each condition below may rely only on those above it.
  TORCH_CHECK(logits.defined() && labels.defined(),
              "ce_loss_grad_: logits and labels are required");
  TORCH_CHECK(logits.dim() == 2, "ce_loss_grad_: expected logits [rows, vocab], got ",
              Dims(logits.sizes()));
  const at::ScalarType t = logits.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16 ||
                  (t == at::kDouble && !logits.is_cuda()),
              "ce_loss_grad_: expected float32, float16 or bfloat16 logits, got ", t);
  TORCH_CHECK(logits.size(1) > 0, "ce_loss_grad_: expected a non-empty vocabulary");
  // Rows must be whole and apart: the kernels address row r at r * stride(0) and write
  // `vocab` values from there, so overlapping rows (stride(0) < vocab, e.g. a transposed or
  // expanded tensor) would be read after being overwritten.
  TORCH_CHECK((logits.stride(1) == 1 || logits.size(1) == 1) &&
                  (logits.size(0) <= 1 || logits.stride(0) >= logits.size(1)),
              "ce_loss_grad_: expected logits contiguous along the vocabulary with rows apart, "
              "got sizes ",
              Dims(logits.sizes()), " and strides ", Dims(logits.strides()));
  TORCH_CHECK(labels.device() == logits.device(), "ce_loss_grad_: labels on ", labels.device(),
              ", logits on ", logits.device());
  TORCH_CHECK(labels.scalar_type() == at::kLong, "ce_loss_grad_: expected int64 labels, got ",
              labels.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0),
              "ce_loss_grad_: expected labels [", std::to_string(logits.size(0)), "], got ",
              Dims(labels.sizes()));
}

}  // namespace detail

namespace {

at::Tensor LossGradMeta(at::Tensor& logits, const at::Tensor& labels, int64_t, double, double,
                        double) {
  detail::CheckCrossEntropyInputs(logits, labels);
  return at::empty({logits.size(0)},
                   logits.options().dtype(at::promote_types(logits.scalar_type(), at::kFloat)));
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, Meta, m) {
  m.impl("ce_loss_grad_", &LossGradMeta);
}

at::Tensor CrossEntropyLossAndGrad_(at::Tensor& logits, const at::Tensor& labels,
                                    const CrossEntropyKernelOptions& options, double grad_scale) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("qlorad::ce_loss_grad_", "")
          .typed<at::Tensor(at::Tensor&, const at::Tensor&, int64_t, double, double, double)>();
  return op.call(logits, labels, options.ignore_index, options.label_smoothing, options.z_loss,
                 grad_scale);
}

}  // namespace qlorad::ops
