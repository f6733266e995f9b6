// linear_ce_online's schema, validation, sizes and driver (the loop over chunks and tiles, the same
// for every device), and the C++ API of ce_online_ops.h. The two device steps it calls are
// internal ops with CPU and CUDA implementations (ce_online_ops_cpu.cc, ce_online_ops_cuda.cc).
#include "kernels/torch/ce_online_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <string>

#include "kernels/ce_online.h"

TORCH_LIBRARY_FRAGMENT(qlorad, m) {
  m.def(
      "linear_ce_online(Tensor hidden, Tensor weight, Tensor labels, int ignore_index=-100, "
      "float label_smoothing=0.0, float z_loss=0.0, int rows=0, int cols=0, "
      "bool compute_grad=True) -> (Tensor, Tensor)");
  // One tile of one chunk: tile = hidden @ weight_tile^T, folded into state and overwritten with
  // P; acc = P @ weight_tile (first tile) or acc * rescale + P @ weight_tile. An empty acc: losses
  // only, no second matmul.
  m.def(
      "_linear_ce_online_tile_(Tensor hidden, Tensor weight_tile, Tensor labels, int vocab_offset, "
      "bool first_tile, Tensor(a!) tile, Tensor(b!) state, Tensor(c!) acc) -> ()");
  // Each row's loss into losses and, if acc is not empty, its gradient into grad.
  m.def(
      "_linear_ce_online_finish_(Tensor state, Tensor acc, Tensor labels, Tensor weight, "
      "Tensor weight_colsum, int ignore_index, float label_smoothing, float z_loss, "
      "Tensor(a!) losses, Tensor(b!) grad) -> ()");
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
  constexpr int64_t kColAlign = 256, kRowAlign = 64, kMinRows = 128, kMaxRows = 4096;
  OnlineCeTiling t;
  t.cols = std::min(std::max<int64_t>(vocab, 1), (4 * dim + kColAlign - 1) / kColAlign * kColAlign);
  const int64_t budget = tokens * dim * elem_bytes / 6;
  const int64_t row_bytes = t.cols * elem_bytes + dim * static_cast<int64_t>(sizeof(float));
  const int64_t fit = budget / std::max<int64_t>(row_bytes, 1) / kRowAlign * kRowAlign;
  t.rows = std::clamp(fit, kMinRows, kMaxRows);
  return t;
}

namespace {

void TileStep(const at::Tensor& hidden, const at::Tensor& weight_tile, const at::Tensor& labels,
              int64_t vocab_offset, bool first_tile, at::Tensor& tile, at::Tensor& state,
              at::Tensor& acc) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("qlorad::_linear_ce_online_tile_", "")
                       .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                   bool, at::Tensor&, at::Tensor&, at::Tensor&)>();
  op.call(hidden, weight_tile, labels, vocab_offset, first_tile, tile, state, acc);
}

void Finish(const at::Tensor& state, const at::Tensor& acc, const at::Tensor& labels,
            const at::Tensor& weight, const at::Tensor& colsum,
            const CrossEntropyKernelOptions& options, at::Tensor& losses, at::Tensor& grad) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("qlorad::_linear_ce_online_finish_", "")
          .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      const at::Tensor&, int64_t, double, double, at::Tensor&, at::Tensor&)>();
  op.call(state, acc, labels, weight, colsum, options.ignore_index, options.label_smoothing,
          options.z_loss, losses, grad);
}

std::tuple<at::Tensor, at::Tensor> LinearCeOnlineImpl(const at::Tensor& hidden_in,
                                                      const at::Tensor& weight_in,
                                                      const at::Tensor& labels_in,
                                                      int64_t ignore_index, double label_smoothing,
                                                      double z_loss, int64_t rows, int64_t cols,
                                                      bool compute_grad) {
  detail::CheckOnlineInputs(hidden_in, weight_in, labels_in, rows, cols);
  const at::Tensor hidden = hidden_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor labels = labels_in.contiguous();
  const int64_t n = hidden.size(0), dim = hidden.size(1), vocab = weight.size(0);
  const OnlineCeTiling automatic = OnlineCeTilingFor(n, dim, vocab, hidden.element_size());
  const int64_t chunk = std::max<int64_t>(1, std::min(rows > 0 ? rows : automatic.rows, n));
  const int64_t width = std::min(cols > 0 ? cols : automatic.cols, vocab);
  const at::ScalarType acc_type = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::TensorOptions acc_options = hidden.options().dtype(acc_type);
  const CrossEntropyKernelOptions options{
      .ignore_index = ignore_index, .label_smoothing = label_smoothing, .z_loss = z_loss};

  at::Tensor losses = at::empty({n}, acc_options);
  at::Tensor grad = at::empty(compute_grad ? hidden.sizes() : at::IntArrayRef{0}, hidden.options());
  // Label smoothing spreads eps / V over every class: its gradient term is the mean row of W.
  const at::Tensor colsum = compute_grad && label_smoothing != 0.0
                                ? weight.sum(0, /*keepdim=*/false, acc_type)
                                : at::empty({0}, acc_options);
  at::Tensor state = at::empty({chunk, kernels::kOnlineCeStateWidth}, acc_options);
  at::Tensor acc =
      at::empty(compute_grad ? at::IntArrayRef{chunk, dim} : at::IntArrayRef{0}, acc_options);
  at::Tensor tile_buffer = at::empty({chunk * width}, hidden.options());
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t r = std::min(chunk, n - start);
    const at::Tensor h = hidden.narrow(0, start, r);
    const at::Tensor y = labels.narrow(0, start, r);
    at::Tensor s = state.narrow(0, 0, r);
    at::Tensor a = compute_grad ? acc.narrow(0, 0, r) : acc;
    for (int64_t v0 = 0; v0 < vocab; v0 += width) {
      const int64_t c = std::min(width, vocab - v0);
      at::Tensor tile = tile_buffer.narrow(0, 0, r * c).view({r, c});
      TileStep(h, weight.narrow(0, v0, c), y, v0, v0 == 0, tile, s, a);
    }
    at::Tensor l = losses.narrow(0, start, r);
    at::Tensor g = compute_grad ? grad.narrow(0, start, r) : grad;
    Finish(s, a, y, weight, colsum, options, l, g);
  }
  return {losses, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CompositeExplicitAutograd, m) {
  m.impl("linear_ce_online", &LinearCeOnlineImpl);
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
