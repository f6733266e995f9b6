#include "worker/trainer/model/chunked_mlp.h"

#include <algorithm>
#include <vector>

#include "common/memory_estimate.h"
#include "worker/trainer/model/fused_layers.h"
#include "worker/trainer/runtime/autograd_context.h"

#ifdef QLORAD_HAVE_NF4_OPS
#include "kernels/torch/swiglu_ops.h"
#endif

namespace qlorad::trainer {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

#ifdef QLORAD_HAVE_NF4_OPS
// The two projections and how the block's rows are cut.
struct MlpPlan {
  const FusedProjection* gate_up;
  const FusedProjection* down;
  int64_t rows, chunk_rows;
  int64_t chunks() const { return (rows + chunk_rows - 1) / chunk_rows; }
};

// Several chunks through one projection dequantize its weight once; a single chunk dequantizes
// it where it is used, for that GEMM alone, so that the block holds no weight the plain path would
// not. `backward_only`: the weight serves dX's GEMM alone (down's in backward, which may stack the
// adapters' A under it).
at::Tensor WeightForChunks(const MlpPlan& plan, const FusedProjection& projection,
                           at::ScalarType dtype, at::TensorList adapters,
                           bool backward_only = false) {
  if (plan.chunks() <= 1) return at::Tensor();
  return backward_only ? projection.BackwardWeight(dtype, adapters)
                       : projection.GemmWeight(dtype, adapters);
}

// Inputs: x, then gate_up's adapters and down's (FusedProjection::Adapters() of each); the kept
// gate|up (no gradient) comes through a pointer.
struct ChunkedMlpFunction : torch::autograd::Function<ChunkedMlpFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList adapters,
                            const FusedProjection* gate_up, const FusedProjection* down,
                            bool output_unused, int64_t chunk_rows,
                            const at::Tensor* kept_gate_up) {
    SaveBorrowed(ctx, "gate_up", gate_up);
    SaveBorrowed(ctx, "down", down);
    ctx->saved_data["chunk_rows"] = chunk_rows;
    // Saved last, after the adapters, when there is one.
    ctx->saved_data["kept_gate_up"] = kept_gate_up->defined();
    std::vector<at::Tensor> saved = {x};
    saved.insert(saved.end(), adapters.begin(), adapters.end());
    if (kept_gate_up->defined()) {
      TORCH_CHECK(kept_gate_up->numel() == x.numel() / x.size(-1) * gate_up->out_features(),
                  "ChunkedMlp: the kept gate|up has ", kept_gate_up->numel(),
                  " elements, not one row of ", gate_up->out_features(), " per row of x");
      saved.push_back(kept_gate_up->reshape({-1, gate_up->out_features()}));
    }
    ctx->save_for_backward(saved);

    auto sizes = x.sizes().vec();
    sizes.back() = down->out_features();
    if (output_unused) return at::empty(sizes, x.options());
    const at::Tensor x2d = x.reshape({-1, x.size(-1)});
    const MlpPlan plan{gate_up, down, x2d.size(0), chunk_rows};
    const size_t gate_up_adapters = gate_up->Adapters().size();
    const at::TensorList gu_adapters = adapters.slice(0, gate_up_adapters);
    const at::TensorList down_adapters = adapters.slice(gate_up_adapters);
    const at::Tensor w_gu = WeightForChunks(plan, *gate_up, x.scalar_type(), gu_adapters);
    const at::Tensor w_down = WeightForChunks(plan, *down, x.scalar_type(), down_adapters);
    at::Tensor y;
    for (int64_t first = 0; first < plan.rows; first += chunk_rows) {
      const int64_t n = std::min(chunk_rows, plan.rows - first);
      at::Tensor xa;
      const at::Tensor gu = gate_up->Forward2d(x2d.narrow(0, first, n), gu_adapters, &xa, w_gu);
      const auto [gate, up] = GateAndUp(gu);
      const at::Tensor y_chunk =
          down->Forward2d(ops::SwigluForward(gate, up), down_adapters, &xa, w_down);
      if (plan.chunks() == 1) {
        y = y_chunk;
      } else {
        if (!y.defined()) y = at::empty({plan.rows, down->out_features()}, x.options());
        y.narrow(0, first, n).copy_(y_chunk);
      }
    }
    return y.view(sizes);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto* gate_up = LoadBorrowed<const FusedProjection>(ctx, "gate_up");
    const auto* down = LoadBorrowed<const FusedProjection>(ctx, "down");
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const bool kept = ctx->saved_data["kept_gate_up"].toBool();
    const at::Tensor kept_gate_up = kept ? saved.back() : at::Tensor();
    const at::TensorList adapters =
        at::TensorList(saved).slice(1, saved.size() - 1 - (kept ? 1 : 0));
    const size_t gate_up_adapters = gate_up->Adapters().size();
    const at::TensorList gu_adapters = adapters.slice(0, gate_up_adapters);
    const at::TensorList down_adapters = adapters.slice(gate_up_adapters);

    const at::Tensor x2d = x.reshape({-1, x.size(-1)});
    const at::Tensor dy = grads[0].reshape({-1, down->out_features()});
    const MlpPlan plan{gate_up, down, x2d.size(0), ctx->saved_data["chunk_rows"].toInt()};
    const at::Tensor w_gu = WeightForChunks(plan, *gate_up, x.scalar_type(), gu_adapters);
    const at::Tensor w_down =
        WeightForChunks(plan, *down, x.scalar_type(), down_adapters, /*backward_only=*/true);
    const bool want_dx = ctx->needs_input_grad(0);
    at::Tensor dx;
    std::vector<at::Tensor> adapter_grads(adapters.size());
    for (int64_t first = 0; first < plan.rows; first += plan.chunk_rows) {
      const int64_t n = std::min(plan.chunk_rows, plan.rows - first);
      const at::Tensor x_chunk = x2d.narrow(0, first, n);
      // Forward again, this chunk's rows only, or the rows its forward kept (then only the
      // adapters' x A^T, which dA needs).
      at::Tensor xa_gu;
      const at::Tensor gu = kept ? kept_gate_up.narrow(0, first, n)
                                 : gate_up->Forward2d(x_chunk, gu_adapters, &xa_gu, w_gu);
      if (kept) xa_gu = gate_up->LoraInput2d(x_chunk, gu_adapters);
      const auto [gate, up] = GateAndUp(gu);
      // Then backward: down's dX, SwiGLU's backward, which also gives down's input h (cheaper
      // than a forward pass over gate and up before it), down's adapter gradients, gate|up.
      FusedProjection::PendingAdapterGrads pending;
      const at::Tensor dh =
          down->BackwardInput2d(x.scalar_type(), down_adapters, dy.narrow(0, first, n),
                                /*want_dx=*/true, &pending, w_down);
      const auto [dgu, h] = ops::SwigluBackwardAndH(dh, gate, up);
      std::vector<at::Tensor> chunk_grads;
      down->AdapterGrads2d(pending, h, down->LoraInput2d(h, down_adapters), down_adapters,
                           &chunk_grads);
      std::vector<at::Tensor> gu_grads;
      const at::Tensor dx_chunk =
          gate_up->Backward2d(x_chunk, xa_gu, gu_adapters, dgu, want_dx, &gu_grads, w_gu);
      gu_grads.insert(gu_grads.end(), chunk_grads.begin(), chunk_grads.end());  // Adapters() order
      for (size_t i = 0; i < gu_grads.size(); ++i) {
        adapter_grads[i] =
            adapter_grads[i].defined() ? adapter_grads[i].add_(gu_grads[i]) : gu_grads[i];
      }
      if (!want_dx) continue;
      if (plan.chunks() == 1) {
        dx = dx_chunk;
      } else {
        if (!dx.defined()) dx = at::empty_like(x2d);
        dx.narrow(0, first, n).copy_(dx_chunk);
      }
    }
    variable_list out = {want_dx ? dx.view(x.sizes()) : at::Tensor()};
    out.insert(out.end(), adapter_grads.begin(), adapter_grads.end());
    out.insert(out.end(), 5, at::Tensor());  // gate_up, down, output_unused, chunk_rows, kept
    return out;
  }
};
#endif

}  // namespace

int64_t MlpChunkRows(int64_t intermediate, at::ScalarType dtype, int64_t tokens) {
  return ::qlorad::MlpChunkRows(intermediate, static_cast<int64_t>(c10::elementSize(dtype)), tokens,
                                MlpChunkMaxRows());
}

at::Tensor ChunkedMlp(const at::Tensor& x, const FusedProjection& gate_up,
                      const FusedProjection& down, bool output_unused, int64_t chunk_rows,
                      const at::Tensor& kept_gate_up) {
#ifdef QLORAD_HAVE_NF4_OPS
  if (chunk_rows <= 0)
    chunk_rows = MlpChunkRows(down.layers().front()->in_features(), x.scalar_type(),
                              x.numel() / std::max<int64_t>(1, x.size(-1)));
  std::vector<at::Tensor> adapters = gate_up.Adapters();
  const std::vector<at::Tensor> down_adapters = down.Adapters();
  adapters.insert(adapters.end(), down_adapters.begin(), down_adapters.end());
  // As a TensorList, so that autograd sees each adapter as an input (a vector it would not).
  return ChunkedMlpFunction::apply(x, at::TensorList(adapters), &gate_up, &down, output_unused,
                                   chunk_rows, &kept_gate_up);
#else
  (void)x, (void)gate_up, (void)down, (void)output_unused, (void)chunk_rows, (void)kept_gate_up;
  TORCH_CHECK(false, "ChunkedMlp needs the qlorad_ops library, which this build lacks");
#endif
}

}  // namespace qlorad::trainer
