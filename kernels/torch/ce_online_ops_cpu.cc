// CPU implementation of linear_ce_online (its steps: ce_online_steps.h), the reference of the CUDA
// kernels (ce_online_kernels.cuh): the same algorithm (reference max with its lag, P rounded to the
// activation dtype for the matmul, l summed before rounding) with fp64 arithmetic per value. State
// and acc are fp32, or fp64 for fp64 inputs.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "kernels/ce_online_format.h"
#include "kernels/torch/ce_online_ops.h"
#include "kernels/torch/ce_online_steps.h"

namespace qlorad::ops {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Folds one row of the tile into the row's state, writes P over it and returns the factor the
// row's acc must be scaled by (1 when the reference max stays, 0..1 when it moves).
template <typename T, typename S>
double FoldTileRow(T* x, int64_t cols, int64_t local_label, bool first_tile, S* state) {
  double tile_max = -kInf, tile_sum_x = 0;
  for (int64_t j = 0; j < cols; ++j) {
    tile_max = std::max(tile_max, static_cast<double>(x[j]));
    tile_sum_x += static_cast<double>(x[j]);
  }
  const double m_old = first_tile ? -kInf : static_cast<double>(state[0]);
  double m = m_old, alpha = 1;
  if (first_tile) {
    m = tile_max;
  } else if (tile_max > m_old + kernels::kOnlineCeMaxLag) {
    m = tile_max;
    alpha = std::exp(m_old - tile_max);
  }
  const bool label_here = local_label >= 0 && local_label < cols;
  const double target = label_here ? static_cast<double>(x[local_label]) : kNaN;
  double l_tile = 0;
  for (int64_t j = 0; j < cols; ++j) {
    const double f = static_cast<double>(x[j]);
    const double e = f == -kInf ? 0.0 : std::exp(f - m);
    x[j] = static_cast<T>(e);
    l_tile += e;  // unrounded, as the kernel sums it
  }
  state[0] = static_cast<S>(m);
  state[1] = static_cast<S>((first_tile ? 0.0 : static_cast<double>(state[1]) * alpha) + l_tile);
  if (first_tile || label_here) state[2] = static_cast<S>(target);
  state[3] = static_cast<S>((first_tile ? 0.0 : static_cast<double>(state[3])) + tile_sum_x);
  return alpha;
}

void TileCpu(const at::Tensor& hidden, const at::Tensor& weight_tile, const at::Tensor& labels,
             int64_t vocab_offset, bool first_tile, at::Tensor& tile, at::Tensor& state,
             at::Tensor& acc) {
  at::mm_out(tile, hidden, weight_tile.t());
  const int64_t rows = tile.size(0), cols = tile.size(1);
  const int64_t* label = labels.data_ptr<int64_t>();
  std::vector<double> alpha(static_cast<size_t>(rows));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tile.scalar_type(), "online tile", [&] {
    using T = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(state.scalar_type(), "online state", [&] {
      for (int64_t r = 0; r < rows; ++r) {
        alpha[static_cast<size_t>(r)] =
            FoldTileRow(tile.data_ptr<T>() + r * cols, cols, label[r] - vocab_offset, first_tile,
                        state.data_ptr<scalar_t>() + r * kernels::kOnlineCeStateWidth);
      }
    });
  });
  if (acc.numel() == 0) return;
  // P @ W_tile in acc's precision (no mixed-dtype matmul on CPU): the values are P as rounded.
  const at::Tensor product = at::mm(tile.to(acc.scalar_type()), weight_tile.to(acc.scalar_type()));
  if (first_tile) {
    acc.copy_(product);
  } else {
    acc.mul_(at::tensor(alpha, acc.options()).unsqueeze(1)).add_(product);
  }
}

template <typename T, typename S>
void FinishRows(const S* state, const S* acc, int64_t rows, int64_t dim, int64_t vocab,
                const int64_t* labels, const T* weight, const S* colsum, int64_t ignore_index,
                double eps, double z_loss, S* losses, T* grad) {
  for (int64_t r = 0; r < rows; ++r) {
    const S* st = state + r * kernels::kOnlineCeStateWidth;
    T* g = grad != nullptr ? grad + r * dim : nullptr;
    const int64_t label = labels[r];
    if (label == ignore_index) {
      losses[r] = 0;
      if (g != nullptr) std::fill(g, g + dim, T(0));
      continue;
    }
    const double m = st[0], l = st[1], target = st[2], sum_x = st[3];
    const double lse = m + std::log(l);
    const bool label_ok = label >= 0 && label < vocab;
    double loss = (1 - eps) * (lse - target) + z_loss * lse * lse;
    if (eps != 0) loss += eps * (lse - sum_x / static_cast<double>(vocab));
    losses[r] = static_cast<S>(label_ok ? loss : kNaN);
    if (g == nullptr) continue;
    const double coef = (1 + 2 * z_loss * lse) / l;
    for (int64_t j = 0; j < dim; ++j) {
      double v = coef * static_cast<double>(acc[r * dim + j]);
      if (label_ok) v -= (1 - eps) * static_cast<double>(weight[label * dim + j]);
      if (eps != 0) v -= eps / static_cast<double>(vocab) * static_cast<double>(colsum[j]);
      g[j] = static_cast<T>(v);
    }
  }
}

void FinishCpu(const at::Tensor& state, const at::Tensor& acc, const at::Tensor& labels,
               const at::Tensor& weight, const at::Tensor& colsum,
               const CrossEntropyKernelOptions& o, at::Tensor& losses, at::Tensor& grad) {
  const bool with_grad = acc.numel() > 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, weight.scalar_type(), "online finish", [&] {
        using T = scalar_t;
        AT_DISPATCH_FLOATING_TYPES(state.scalar_type(), "online finish state", [&] {
          using S = scalar_t;
          FinishRows<T, S>(state.data_ptr<S>(), with_grad ? acc.data_ptr<S>() : nullptr,
                           state.size(0), weight.size(1), weight.size(0),
                           labels.data_ptr<int64_t>(), weight.data_ptr<T>(),
                           colsum.numel() > 0 ? colsum.data_ptr<S>() : nullptr, o.ignore_index,
                           o.label_smoothing, o.z_loss, losses.data_ptr<S>(),
                           with_grad ? grad.data_ptr<T>() : nullptr);
        });
      });
}

// The steps on views of the call's buffers (the per-tile cost here is the arithmetic anyway).
class CpuSteps final : public detail::OnlineCeSteps {
 public:
  explicit CpuSteps(const detail::OnlineCeBuffers& b) : b_(b) {}

  void Tile(int64_t start, int64_t rows, int64_t v0, int64_t cols) override {
    at::Tensor tile = b_.tile.narrow(0, 0, rows * cols).view({rows, cols});
    at::Tensor state = b_.state.narrow(0, 0, rows);
    at::Tensor acc = b_.acc.numel() > 0 ? b_.acc.narrow(0, 0, rows) : b_.acc;
    TileCpu(b_.hidden.narrow(0, start, rows), b_.weight.narrow(0, v0, cols),
            b_.labels.narrow(0, start, rows), v0, v0 == 0, tile, state, acc);
  }

  void Finish(int64_t start, int64_t rows) override {
    const bool with_grad = b_.acc.numel() > 0;
    at::Tensor losses = b_.losses.narrow(0, start, rows);
    at::Tensor grad = with_grad ? b_.grad.narrow(0, start, rows) : b_.grad;
    FinishCpu(b_.state.narrow(0, 0, rows), with_grad ? b_.acc.narrow(0, 0, rows) : b_.acc,
              b_.labels.narrow(0, start, rows), b_.weight, b_.weight_colsum, b_.options, losses,
              grad);
  }

 private:
  const detail::OnlineCeBuffers& b_;
};

std::unique_ptr<detail::OnlineCeSteps> MakeCpuSteps(const detail::OnlineCeBuffers& b) {
  return std::make_unique<CpuSteps>(b);
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CPU, m) {
  m.impl("linear_ce_online", &detail::LinearCeOnlineWith<&MakeCpuSteps>);
}

}  // namespace qlorad::ops
