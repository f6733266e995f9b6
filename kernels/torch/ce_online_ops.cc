// linear_ce_online's schema, validation, sizes, Meta implementation and driver (the loop over
// chunks and tiles, the same for every device: ce_online_steps.h), and the C++ API of
// ce_online_ops.h. CPU and CUDA register the op with their steps (ce_online_ops_{cpu,cuda}.cc).
#include "kernels/torch/ce_online_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <string>

#include "kernels/ce_online.h"
#include "kernels/torch/ce_online_steps.h"

TORCH_LIBRARY_FRAGMENT(qlorad, m) {
  m.def(
      "linear_ce_online(Tensor hidden, Tensor weight, Tensor labels, int ignore_index=-100, "
      "float label_smoothing=0.0, float z_loss=0.0, int rows=0, int cols=0, "
      "bool compute_grad=True) -> (Tensor, Tensor)");
}

namespace qlorad::ops {

namespace detail {

void CheckOnlineInputs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                       int64_t rows, int64_t cols) {
  // Numbers go into messages as strings (see ce_ops.cc on the GPU machine's libstdc++).
  TORCH_CHECK(hidden.defined() && weight.defined() && labels.defined(),
              "linear_ce_online: hidden, weight and labels are required");
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2,
              "linear_ce_online: expected hidden [tokens, dim] and weight [vocab, dim], got ",
              std::to_string(hidden.dim()), "-d and ", std::to_string(weight.dim()), "-d tensors");
  TORCH_CHECK(weight.size(1) == hidden.size(1), "linear_ce_online: weight has dim ",
              std::to_string(weight.size(1)), ", hidden has ", std::to_string(hidden.size(1)));
  TORCH_CHECK(weight.size(0) > 0 && hidden.size(1) > 0,
              "linear_ce_online: expected a non-empty vocabulary and dim");
  const at::ScalarType t = hidden.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16 ||
                  (t == at::kDouble && !hidden.is_cuda()),
              "linear_ce_online: expected float32, float16 or bfloat16 hidden, got ", t);
  TORCH_CHECK(weight.scalar_type() == t, "linear_ce_online: weight is ", weight.scalar_type(),
              ", hidden is ", t, " (cast the weight to the activation dtype)");
  TORCH_CHECK(weight.device() == hidden.device() && labels.device() == hidden.device(),
              "linear_ce_online: hidden on ", hidden.device(), ", weight on ", weight.device(),
              ", labels on ", labels.device());
  TORCH_CHECK(labels.scalar_type() == at::kLong, "linear_ce_online: expected int64 labels, got ",
              labels.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == hidden.size(0),
              "linear_ce_online: expected labels [", std::to_string(hidden.size(0)), "], got a ",
              std::to_string(labels.dim()), "-d tensor of ", std::to_string(labels.numel()));
  TORCH_CHECK(rows >= 0 && cols >= 0,
              "linear_ce_online: rows and cols must be >= 0 (0: auto), got ", std::to_string(rows),
              " and ", std::to_string(cols));
}

}  // namespace detail

OnlineCeTiling OnlineCeTilingFor(int64_t tokens, int64_t dim, int64_t vocab, int64_t elem_bytes) {
  constexpr int64_t kMinRows = 512, kMaxRows = 4096, kNarrowCols = 4096, kWideCols = 8192;
  const int64_t budget = tokens * dim * elem_bytes / 5;
  const auto scratch = [&](int64_t rows, int64_t cols) {
    return rows * (cols * elem_bytes + dim * static_cast<int64_t>(sizeof(float)));
  };
  OnlineCeTiling t;
  t.cols = scratch(kMinRows, kWideCols) <= budget ? kWideCols : kNarrowCols;
  t.rows = kMinRows;
  while (t.rows < kMaxRows && scratch(2 * t.rows, t.cols) <= budget) t.rows *= 2;
  t.cols = std::min(t.cols, std::max<int64_t>(vocab, 1));
  return t;
}

namespace detail {

std::tuple<at::Tensor, at::Tensor> RunLinearCeOnline(
    const at::Tensor& hidden_in, const at::Tensor& weight_in, const at::Tensor& labels_in,
    int64_t ignore_index, double label_smoothing, double z_loss, int64_t rows, int64_t cols,
    bool compute_grad, OnlineCeStepsFactory make_steps) {
  CheckOnlineInputs(hidden_in, weight_in, labels_in, rows, cols);
  // The op has no autograd formula (callers wrap it, as the trainer's FusedLinearCrossEntropy
  // does): its inner matmuls must not try to record a graph for inputs that require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  OnlineCeBuffers b;
  b.hidden = hidden_in.contiguous();
  b.weight = weight_in.contiguous();
  b.labels = labels_in.contiguous();
  const int64_t n = b.hidden.size(0), dim = b.hidden.size(1), vocab = b.weight.size(0);
  const OnlineCeTiling automatic = OnlineCeTilingFor(n, dim, vocab, b.hidden.element_size());
  const int64_t chunk = std::max<int64_t>(1, std::min(rows > 0 ? rows : automatic.rows, n));
  const int64_t width = std::min(cols > 0 ? cols : automatic.cols, vocab);
  const at::ScalarType acc_type = b.hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::TensorOptions acc_options = b.hidden.options().dtype(acc_type);
  b.options = {.ignore_index = ignore_index, .label_smoothing = label_smoothing, .z_loss = z_loss};
  b.losses = at::empty({n}, acc_options);
  b.grad = at::empty(compute_grad ? b.hidden.sizes() : at::IntArrayRef{0}, b.hidden.options());
  // Label smoothing spreads eps / V over every class: its gradient term is the sum of W's rows.
  b.weight_colsum = compute_grad && label_smoothing != 0.0
                        ? b.weight.sum(0, /*keepdim=*/false, acc_type)
                        : at::empty({0}, acc_options);
  b.state = at::empty({chunk, kernels::kOnlineCeStateWidth}, acc_options);
  b.acc = at::empty(compute_grad ? at::IntArrayRef{chunk, dim} : at::IntArrayRef{0}, acc_options);
  b.tile = at::empty({chunk * width}, b.hidden.options());
  const std::unique_ptr<OnlineCeSteps> steps = make_steps(b);
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t r = std::min(chunk, n - start);
    for (int64_t v0 = 0; v0 < vocab; v0 += width)
      steps->Tile(start, r, v0, std::min(width, vocab - v0));
    steps->Finish(start, r);
  }
  return {b.losses, b.grad};
}

}  // namespace detail

namespace {

std::tuple<at::Tensor, at::Tensor> LinearCeOnlineMeta(const at::Tensor& hidden,
                                                      const at::Tensor& weight,
                                                      const at::Tensor& labels, int64_t, double,
                                                      double, int64_t rows, int64_t cols,
                                                      bool compute_grad) {
  detail::CheckOnlineInputs(hidden, weight, labels, rows, cols);
  const at::ScalarType acc_type = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return {at::empty({hidden.size(0)}, hidden.options().dtype(acc_type)),
          at::empty(compute_grad ? hidden.sizes() : at::IntArrayRef{0}, hidden.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, Meta, m) {
  m.impl("linear_ce_online", &LinearCeOnlineMeta);
}

std::tuple<at::Tensor, at::Tensor> LinearCrossEntropyOnline(
    const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
    const CrossEntropyKernelOptions& options, int64_t rows, int64_t cols, bool compute_grad) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("qlorad::linear_ce_online", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double,
                           double, int64_t, int64_t, bool)>();
  return op.call(hidden, weight, labels, options.ignore_index, options.label_smoothing,
                 options.z_loss, rows, cols, compute_grad);
}

}  // namespace qlorad::ops
