// linear_ce_online's schema, validation, sizes, Meta implementation and driver (the loop over
// chunks and tiles, the same for every device: ce_online_steps.h), and the C++ API of
// ce_online_ops.h. CPU and CUDA register the op with their steps (ce_online_ops_{cpu,cuda}.cc).
#include "kernels/torch/ce_online_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <utility>

#include "kernels/ce_online_format.h"
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

namespace {

// The automatic tiles' preferred shape (AutoBudget).
constexpr int64_t kWidestRows = 2048, kWidestCols = 16384;

int64_t ScratchBytes(const OnlineCeTiling& t, int64_t dim, int64_t elem_bytes,
                     int64_t acc_elem_bytes) {
  return t.rows * (t.cols * elem_bytes + dim * acc_elem_bytes);
}

// The largest tile whose scratch ([rows, cols] in the activation dtype + [rows, d] of acc) fits
// `budget`, but never below 512 x min(4096, V): min(16384, V) columns where 2048 rows of them fit,
// else min(8192, V) where 512 rows do (or `fixed_cols` when given), rows doubled from there up to
// max_rows.
OnlineCeTiling TilingWithin(int64_t budget, int64_t dim, int64_t vocab, int64_t elem_bytes,
                            int64_t acc_elem_bytes, int64_t max_rows, int64_t fixed_cols = 0) {
  constexpr int64_t kMinRows = 512, kNarrowCols = 4096, kWideCols = 8192;
  const auto fits = [&](int64_t rows, int64_t cols) {
    return ScratchBytes({.rows = rows, .cols = cols}, dim, elem_bytes, acc_elem_bytes) <= budget;
  };
  const int64_t widest = std::min(kWidestCols, vocab), wide = std::min(kWideCols, vocab),
                narrow = std::min(kNarrowCols, vocab);
  OnlineCeTiling t{.rows = kMinRows};
  if (fixed_cols > 0) {
    t.cols = std::min(fixed_cols, vocab);
  } else if (fits(kWidestRows, widest)) {
    t = {.rows = kWidestRows, .cols = widest};
  } else {
    t.cols = fits(kMinRows, wide) ? wide : narrow;
  }
  while (t.rows < max_rows && fits(2 * t.rows, t.cols)) t.rows *= 2;
  return t;
}

// The automatic sizes' budget: a fifth of the [N, d] gradient, but at least a tile of 2048 rows by
// min(16384, V) columns. In Llama-3.2-1B's step (d=2048, N=8192, V=128256) that tile took the
// loss from 14.90 ms (1024 x 8192, the floor before) to 14.41 ms on an H100, ahead of 2048 x 8192
// (14.71) and 4096 x 8192 (14.67) (bench/results/2026-12-07-h100-1bfe21a-gpu_tests.txt):
// fewer, larger matmuls and a quarter of the launches, for 80-128 MiB of scratch at d = 2048-8192.
int64_t AutoBudget(int64_t tokens, int64_t dim, int64_t vocab, int64_t elem_bytes,
                   int64_t acc_elem_bytes) {
  const OnlineCeTiling floor{.rows = kWidestRows, .cols = std::min(kWidestCols, vocab)};
  return std::max(tokens * dim * elem_bytes / 5,
                  ScratchBytes(floor, dim, elem_bytes, acc_elem_bytes));
}

}  // namespace

OnlineCeTiling OnlineCeTilingFor(int64_t tokens, int64_t dim, int64_t vocab, int64_t elem_bytes) {
  return TilingWithin(AutoBudget(tokens, dim, vocab, elem_bytes, sizeof(float)), dim, vocab,
                      elem_bytes, sizeof(float), /*max_rows=*/4096);
}

namespace detail {

namespace {

// One pass of the loop over rows [begin, end) with one tiling, on the given scratch.
void RunRows(OnlineCeBuffers& b, OnlineCeStepsFactory make_steps, int64_t begin, int64_t end,
             const OnlineCeTiling& t, at::Tensor tile, at::Tensor acc) {
  b.state = at::empty({t.rows, kernels::kOnlineCeStateWidth}, b.losses.options());
  b.tile = std::move(tile);
  b.acc = std::move(acc);
  const int64_t vocab = b.weight.size(0);
  const std::unique_ptr<OnlineCeSteps> steps = make_steps(b);
  for (int64_t start = begin; start < end; start += t.rows) {
    const int64_t r = std::min(t.rows, end - start);
    for (int64_t v0 = 0; v0 < vocab; v0 += t.cols)
      steps->Tile(start, r, v0, std::min(t.cols, vocab - v0));
    steps->Finish(start, r);
  }
}

}  // namespace

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
  const int64_t elem = b.hidden.element_size();
  const at::ScalarType acc_type = b.hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::TensorOptions acc_options = b.hidden.options().dtype(acc_type);
  const int64_t acc_elem = c10::elementSize(acc_type);
  b.options = {.ignore_index = ignore_index, .label_smoothing = label_smoothing, .z_loss = z_loss};
  b.losses = at::empty({n}, acc_options);
  b.grad = at::empty(compute_grad ? b.hidden.sizes() : at::IntArrayRef{0}, b.hidden.options());
  // Label smoothing spreads eps / V over every class: its gradient term is the sum of W's rows.
  b.weight_colsum = compute_grad && label_smoothing != 0.0
                        ? b.weight.sum(0, /*keepdim=*/false, acc_type)
                        : at::empty({0}, acc_options);
  const auto own_scratch = [&](const OnlineCeTiling& t) {
    return std::pair{
        at::empty({t.rows * t.cols}, b.hidden.options()),
        at::empty(compute_grad ? at::IntArrayRef{t.rows, dim} : at::IntArrayRef{0}, acc_options)};
  };

  // Automatic rows for the given (or automatic) columns.
  OnlineCeTiling own = TilingWithin(AutoBudget(n, dim, vocab, elem, acc_elem), dim, vocab, elem,
                                    acc_elem, /*max_rows=*/4096, cols);
  if (rows > 0) own.rows = rows;
  own.rows = std::max<int64_t>(1, std::min(own.rows, n));
  int64_t begin = 0;
  if (compute_grad && rows == 0 && cols == 0) {
    // While most of the gradient is still unwritten, its last rows are free memory: a larger tile
    // (faster matmuls, fewer launches) works there at no cost in peak, on the rows ahead of it.
    // The rows it occupies come last, on the op's own (smaller) scratch.
    const int64_t total = n * dim * elem;
    const OnlineCeTiling big =
        TilingWithin(total / 2, dim, vocab, elem, acc_elem, /*max_rows=*/4096);
    const int64_t big_bytes = ScratchBytes(big, dim, elem, acc_elem);
    if (big_bytes > ScratchBytes(own, dim, elem, acc_elem) && big_bytes <= total / 2) {
      const int64_t offset = (total - big_bytes) / 256 * 256;  // cuBLAS prefers 256-byte starts
      const int64_t tail_rows = n - offset / (dim * elem);
      const int64_t end = (n - tail_rows) / big.rows * big.rows;
      if (end > 0) {
        const at::Tensor bytes = b.grad.view({-1}).view(at::kByte);
        const int64_t tile_bytes = big.rows * big.cols * elem;
        RunRows(b, make_steps, 0, end, big,
                bytes.narrow(0, offset, tile_bytes).view(b.hidden.scalar_type()),
                bytes.narrow(0, offset + tile_bytes, big.rows * dim * acc_elem)
                    .view(acc_type)
                    .view({big.rows, dim}));
        begin = end;
      }
    }
  }
  if (begin < n) {
    auto [tile, acc] = own_scratch(own);
    RunRows(b, make_steps, begin, n, own, std::move(tile), std::move(acc));
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
