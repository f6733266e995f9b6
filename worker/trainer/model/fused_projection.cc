#include "worker/trainer/model/fused_projection.h"

#include <cstdlib>
#include <string_view>
#include <utility>

#include "worker/trainer/model/fused_layers.h"
#include "worker/trainer/runtime/autograd_context.h"

namespace qlorad::trainer {

FusedProjection::FusedProjection(std::vector<QLoraLinear> layers) : layers_(std::move(layers)) {
  TORCH_CHECK(!layers_.empty(), "FusedProjection: no layers");
  for (const auto& layer : layers_) {
    TORCH_CHECK(layer->in_features() == layers_.front()->in_features(),
                "FusedProjection: layers read inputs of ", layers_.front()->in_features(), " and ",
                layer->in_features(), " features");
    out_features_ += layer->out_features();
  }
}

bool FusedProjection::Applies(const at::Tensor& x) const {
  return AppliesTo(x.scalar_type());
}

bool FusedProjection::AppliesTo(at::ScalarType dtype) const {
  if (!FusedPathsEnabled()) return false;
  const bool lora = has_lora();
  for (const auto& layer : layers_) {
    if (layer->external_weights() || layer->has_lora() != lora) return false;
    if (!lora) continue;
    const LoraOptions& options = layer->lora_options();
    if (options.compute_dtype != dtype) return false;
    if (options.dropout > 0 && layer->is_training()) return false;
  }
  return true;
}

void FusedProjection::CastTogether(const std::vector<const FusedProjection*>& projections,
                                   at::ScalarType dtype) {
  std::vector<at::Tensor> to, from;
  for (const FusedProjection* projection : projections) {
    if (projection->has_lora() && projection->AppliesTo(dtype)) {
      projection->casts_->Plan(projection->Adapters(), dtype, &to, &from);
    }
  }
  if (to.empty()) return;
  const at::NoGradGuard no_grad;
  at::_foreach_copy_(to, from);
}

at::Tensor FusedProjection::StackedWeight(at::ScalarType dtype) const {
  if (layers_.size() == 1) return layers_.front()->BaseWeight(dtype);
  const QLoraLinear& first = layers_.front();
  const at::Device device =
      first->nf4_weight() ? first->nf4_weight()->packed.device() : first->dense_weight().device();
  at::Tensor stacked =
      at::empty({out_features_, in_features()}, at::TensorOptions().dtype(dtype).device(device));
  StackedWeightInto(stacked);
  return stacked;
}

void FusedProjection::StackedWeightInto(const at::Tensor& out) const {
#ifdef QLORAD_HAVE_NF4_OPS
  bool all_nf4 = true;
  for (const auto& layer : layers_) all_nf4 = all_nf4 && layer->quantized();
  if (all_nf4) {
    std::vector<const ops::NF4Weight*> weights;
    std::vector<at::Tensor> rows;
    int64_t offset = 0;
    for (const auto& layer : layers_) {
      weights.push_back(&*layer->nf4_weight());
      // Rows of `out`: contiguous, or spaced rows the op writes in place, as `out` is.
      rows.push_back(out.narrow(0, offset, layer->out_features()));
      offset += layer->out_features();
    }
    ops::DequantizeNF4ManyOut(weights, rows);
    return;
  }
#endif
  int64_t offset = 0;
  for (const auto& layer : layers_) {
    out.narrow(0, offset, layer->out_features()).copy_(layer->BaseWeight(out.scalar_type()));
    offset += layer->out_features();
  }
}

LoraFolding LoraFoldingFromEnvironment() {
  static const LoraFolding folding = [] {
    const char* value = std::getenv("QLORAD_FOLD_LORA");
    if (value == nullptr) return LoraFolding::kForward;
    const std::string_view v(value);
    return v == "0" ? LoraFolding::kOff : v == "both" ? LoraFolding::kBoth : LoraFolding::kForward;
  }();
  return folding;
}

bool BackwardStackingFromEnvironment() {
  static const bool stack = [] {
    const char* value = std::getenv("QLORAD_BACKWARD_STACK");
    return value == nullptr || std::string_view(value) != "0";
  }();
  return stack;
}

bool FusedProjection::FoldingOn() const {
  return folding_ != LoraFolding::kOff && has_lora();
}

bool FusedProjection::FoldsAdapters() const {
  return FoldingOn() && out_features_ >= 2 * in_features();
}

bool FusedProjection::FoldsAdaptersFor(const at::Tensor& x2d) const {
  return FoldsAdapters() || HasRoom(x2d);  // room only where fed with room, folding on
}

bool FusedProjection::StacksAdaptersInBackward() const {
  return FoldingOn() && stack_backward_ && in_features() > out_features_;
}

int64_t FusedProjection::LoraColumns() const {
  int64_t columns = 0;
  if (has_lora()) {
    for (const auto& layer : layers_) columns += layer->lora_a().size(0);
  }
  return columns;
}

int64_t FusedProjection::InputRoom() const {
  // Rounded up to 8 values (16 bytes in bf16): every row of the producer's output then starts
  // 16-byte aligned, as its pack kernels need (else they take their single-value kernels).
  return fed_with_room_ && FoldingOn() ? (LoraColumns() + 7) / 8 * 8 : 0;
}

bool FusedProjection::HasRoom(const at::Tensor& x2d) const {
  const int64_t room = InputRoom(), in = in_features();
  if (room == 0 || x2d.dim() != 2 || x2d.size(1) != in || x2d.size(0) == 0) return false;
  if (x2d.stride(1) != 1 || x2d.stride(0) != in + room) return false;
  const int64_t last = x2d.storage_offset() + (x2d.size(0) - 1) * (in + room) + in + room;
  return last * static_cast<int64_t>(x2d.element_size()) <=
         static_cast<int64_t>(x2d.storage().nbytes());
}

at::Tensor FusedProjection::GemmWeight(at::ScalarType dtype, at::TensorList adapters) const {
  return WeightFor(dtype, adapters, FoldsAdapters());
}

at::Tensor FusedProjection::WeightFor(at::ScalarType dtype, at::TensorList adapters,
                                      bool fold) const {
  if (adapters.empty() || !fold) return StackedWeight(dtype);
  const size_t n = layers_.size();
  const int64_t in = in_features(), r_total = LoraColumns();
  at::Tensor weight = at::empty({out_features_, in + r_total}, adapters[n].options().dtype(dtype));
  StackedWeightInto(weight.narrow(1, 0, in));
  // Each s_i B_i in its rows and columns, zeros in the other adapters' columns. The scale is
  // applied before the one rounding to `dtype` (B in its own dtype times s, then cast), as the
  // unfolded path's GEMM applies it in fp32 to B cast to `dtype`: the same values whenever s is a
  // power of two (alpha = r, 2r, ...) or B is already in `dtype`.
  // One adapter (down) fills every column of its block: nothing to zero.
  if (n > 1) weight.narrow(1, in, r_total).zero_();
  int64_t out = 0, r = 0;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& b = adapters[n + i];
    const double scale = layers_[i]->lora_options().scale;
    // alpha = r (scale 1) is the common case: a copy alone, no product kernel and buffer.
    weight.narrow(0, out, b.size(0))
        .narrow(1, in + r, b.size(1))
        .copy_(scale == 1.0 ? b : b * scale);
    out += b.size(0);
    r += b.size(1);
  }
  return weight;
}

at::Tensor FusedProjection::BackwardWeight(at::ScalarType dtype, at::TensorList adapters) const {
  if (adapters.empty() || !StacksAdaptersInBackward()) return GemmWeight(dtype, adapters);
  const at::Tensor& a = casts_->Get(adapters, dtype).stacked_a;
  at::Tensor weight = at::empty({out_features_ + a.size(0), in_features()}, a.options());
  StackedWeightInto(weight.narrow(0, 0, out_features_));
  weight.narrow(0, out_features_, a.size(0)).copy_(a);
  return weight;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Inputs: x, then the adapters (Adapters()).
struct FusedProjectionFunction : torch::autograd::Function<FusedProjectionFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList adapters,
                            const FusedProjection* projection) {
    SaveBorrowed(ctx, "projection", projection);
    at::Tensor xa, x_kept;
    const at::Tensor y =
        projection->Forward2d(x.reshape({-1, x.size(-1)}), adapters, &xa, {}, &x_kept);
    std::vector<at::Tensor> saved = {x_kept, xa};
    saved.insert(saved.end(), adapters.begin(), adapters.end());
    ctx->save_for_backward(saved);
    auto sizes = x.sizes().vec();
    sizes.back() = projection->out_features();
    return y.view(sizes);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto* projection = LoadBorrowed<const FusedProjection>(ctx, "projection");
    const variable_list saved = ctx->get_saved_variables();
    const at::TensorList adapters = at::TensorList(saved).slice(2);
    variable_list adapter_grads;
    const at::Tensor dx = projection->Backward2d(saved[0], saved[1], adapters,
                                                 grads[0].reshape({-1, projection->out_features()}),
                                                 ctx->needs_input_grad(0), &adapter_grads);
    // x's sizes: the output's, with x's width last (what was saved is x as rows).
    std::vector<int64_t> x_sizes = grads[0].sizes().vec();
    x_sizes.back() = saved[0].size(1);
    variable_list out = {dx.defined() ? dx.view(x_sizes) : at::Tensor()};
    out.insert(out.end(), adapter_grads.begin(), adapter_grads.end());
    out.emplace_back();  // the projection pointer
    return out;
  }
};

}  // namespace

std::vector<at::Tensor> FusedProjection::Adapters() const {
  std::vector<at::Tensor> adapters;
  if (has_lora()) {
    for (const auto& layer : layers_) adapters.push_back(layer->lora_a());
    for (const auto& layer : layers_) adapters.push_back(layer->lora_b());
  }
  return adapters;
}

at::Tensor FusedProjection::Forward2d(const at::Tensor& x2d, at::TensorList adapters,
                                      at::Tensor* xa, const at::Tensor& weight,
                                      at::Tensor* x_kept) const {
  const at::ScalarType dtype = x2d.scalar_type();
  const bool room = HasRoom(x2d);
  const bool fold = !adapters.empty() && (FoldsAdapters() || room);
  const at::Tensor w = weight.defined() ? weight : WeightFor(dtype, adapters, fold);
  if (x_kept != nullptr) *x_kept = x2d;
  if (adapters.empty()) {
    *xa = at::Tensor();
    return at::mm(x2d, w.t());
  }
  const AdapterCastCache::Casts casts = casts_->Get(adapters, dtype);
  if (fold) {
    const int64_t in = in_features(), r_total = casts.stacked_a.size(0);
    TORCH_CHECK(w.size(1) == in + r_total, "FusedProjection: a folded GEMM needs W+ [",
                out_features_, ", ", in + r_total, "], got a weight of ", w.sizes());
    at::Tensor x_xa;
    if (room) {
      // x's rows with their spare columns, through a tensor of its own: writing xa there is no
      // write to x (no version bump that would fail a backward that saved x), and no value of x
      // or of anything else lives in those columns.
      x_xa = at::empty({0}, x2d.options());
      x_xa.set_(x2d.storage(), x2d.storage_offset(), {x2d.size(0), in + r_total},
                {x2d.stride(0), 1});
    } else {
      x_xa = at::empty({x2d.size(0), in + r_total}, x2d.options());
      x_xa.narrow(1, 0, in).copy_(x2d);
      if (x_kept != nullptr) *x_kept = x_xa.narrow(1, 0, in);
    }
    *xa = x_xa.narrow(1, in, r_total).addmm_(x2d, casts.stacked_a.t(), /*beta=*/0);
    return at::mm(x_xa, w.t());
  }
  *xa = at::mm(x2d, casts.stacked_a.t());
  // The adapters' update first, each into its columns of the output (the LoRA scale in the GEMM's
  // alpha), then the base GEMM adds itself onto it (beta = 1): the sum costs no pass over the
  // output beyond what the big GEMM's epilogue reads, where an update added afterwards would read
  // and write the whole output once more.
  at::Tensor y = at::empty({x2d.size(0), out_features_}, x2d.options());
  int64_t out = 0, r = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const int64_t out_i = layers_[i]->out_features(), r_i = casts.b[i].size(1);
    y.narrow(1, out, out_i)
        .addmm_(xa->narrow(1, r, r_i), casts.b[i].t(), /*beta=*/0,
                /*alpha=*/layers_[i]->lora_options().scale);
    out += out_i;
    r += r_i;
  }
  return y.addmm_(x2d, w.t());
}

at::Tensor FusedProjection::LoraInput2d(const at::Tensor& x2d, at::TensorList adapters) const {
  if (adapters.empty()) return at::Tensor();
  return at::mm(x2d, casts_->Get(adapters, x2d.scalar_type()).stacked_a.t());
}

at::Tensor FusedProjection::Backward2d(const at::Tensor& x2d, const at::Tensor& xa,
                                       at::TensorList adapters, const at::Tensor& dy, bool want_dx,
                                       std::vector<at::Tensor>* adapter_grads,
                                       const at::Tensor& weight) const {
  PendingAdapterGrads pending;
  // x2d is what forward kept (x_kept): folded there exactly when folded here.
  at::Tensor dx = BackwardInputFor(x2d.scalar_type(), adapters, dy, want_dx, &pending, weight,
                                   !adapters.empty() && FoldsAdaptersFor(x2d));
  AdapterGrads2d(pending, x2d, xa, adapters, adapter_grads);
  return dx;
}

at::Tensor FusedProjection::BackwardInput2d(at::ScalarType dtype, at::TensorList adapters,
                                            const at::Tensor& dy, bool want_dx,
                                            PendingAdapterGrads* pending,
                                            const at::Tensor& weight) const {
  return BackwardInputFor(dtype, adapters, dy, want_dx, pending, weight, FoldsAdapters());
}

at::Tensor FusedProjection::BackwardInputFor(at::ScalarType dtype, at::TensorList adapters,
                                             const at::Tensor& dy_in, bool want_dx,
                                             PendingAdapterGrads* pending, const at::Tensor& weight,
                                             bool fold) const {
  const at::Tensor dy = dy_in.to(dtype);
  const bool fold_here = fold && folding_ == LoraFolding::kBoth;
  const auto base_weight = [&] {
    const at::Tensor w = weight.defined() ? weight : WeightFor(dtype, adapters, fold_here);
    // W+ handed in for an unfolded backward: its first columns are W (rows in + r apart).
    return fold_here || w.size(1) == in_features() ? w : w.narrow(1, 0, in_features());
  };
  *pending = PendingAdapterGrads{};
  if (adapters.empty()) return want_dx ? at::mm(dy, base_weight()) : at::Tensor();
  const AdapterCastCache::Casts casts = casts_->Get(adapters, dtype);
  const int64_t r_total = casts.stacked_a.size(0);
  if (fold_here && want_dx) {
    // [dY W | s dY B] in one GEMM, then dX = dY W + (s dY B) A in place in its first columns.
    // (Without want_dx, s dY B alone below: the folded GEMM would compute dY W for nothing.)
    const int64_t in = in_features();
    const at::Tensor both = at::mm(dy, base_weight());
    at::Tensor dyb = both.narrow(1, in, r_total);
    at::Tensor dx = both.narrow(1, 0, in).addmm_(dyb, casts.stacked_a);
    *pending = PendingAdapterGrads{dy, std::move(dyb)};
    return dx;
  }
  if (want_dx && StacksAdaptersInBackward()) {
    // dX = [dY | s dY B] [W ; A]: dY copied beside s dY B, then one GEMM.
    const int64_t out = out_features_;
    at::Tensor dy_dyb = at::empty({dy.size(0), out + r_total}, dy.options());
    dy_dyb.narrow(1, 0, out).copy_(dy);
    at::Tensor dyb = dy_dyb.narrow(1, out, r_total);
    ScaledGradTimesB(dy, casts, dyb);
    const at::Tensor w = weight.defined() ? weight : BackwardWeight(dtype, adapters);
    TORCH_CHECK(w.size(0) == out + r_total,
                "FusedProjection: a backward that stacks the adapters needs [W ; A] [",
                out + r_total, ", ", in_features(), "], got a weight of ", w.sizes());
    at::Tensor dx = at::mm(dy_dyb, w);
    *pending = PendingAdapterGrads{dy, std::move(dyb)};
    return dx;
  }
  at::Tensor dyb = at::empty({dy.size(0), r_total}, dy.options());
  ScaledGradTimesB(dy, casts, dyb);
  // dX = (s dY B) A + dY W: the adapters' share first, then the base GEMM adds onto it (beta = 1),
  // as in Forward2d.
  at::Tensor dx;
  if (want_dx) {
    dx = at::mm(dyb, casts.stacked_a);
    dx.addmm_(dy, base_weight());
  }
  *pending = PendingAdapterGrads{dy, std::move(dyb)};
  return dx;
}

void FusedProjection::ScaledGradTimesB(const at::Tensor& dy, const AdapterCastCache::Casts& casts,
                                       const at::Tensor& dyb) const {
  int64_t offset = 0, r = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const int64_t r_i = casts.b[i].size(1), out_i = layers_[i]->out_features();
    dyb.narrow(1, r, r_i).addmm_(dy.narrow(1, offset, out_i), casts.b[i], /*beta=*/0,
                                 /*alpha=*/layers_[i]->lora_options().scale);
    offset += out_i;
    r += r_i;
  }
}

void FusedProjection::AdapterGrads2d(const PendingAdapterGrads& pending, const at::Tensor& x2d,
                                     const at::Tensor& xa, at::TensorList adapters,
                                     std::vector<at::Tensor>* adapter_grads) const {
  if (adapters.empty()) return;
  const size_t n = layers_.size();
  const int64_t r_each = adapters[n].size(1);
  // Every dA_i in one GEMM and one cast (the A's share a dtype, as the B's do: one LoraOptions).
  const at::Tensor da = at::mm(pending.dyb.t(), x2d).to(adapters[0].scalar_type());
  // dB_i = s_i dY_i^T xa_i, each into its rows of one buffer, cast to the adapters' dtype at once:
  // each gradient is a slice of that cast, not a cast of its own. (cuBLAS's fp32-output GEMMs
  // would skip the cast, but a Kineto trace on an H100 showed the device idle for hundreds of
  // microseconds after many of them: bench/results/2026-12-07-h100-d39684a-trace-ckpt-off.txt.)
  at::Tensor db = at::empty({out_features_, r_each}, pending.dy.options());
  int64_t offset = 0, r = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t r_i = adapters[n + i].size(1), out_i = layers_[i]->out_features();
    TORCH_CHECK(r_i == r_each, "FusedProjection: adapters of ranks ", r_each, " and ", r_i,
                " in one projection");
    at::Tensor db_i = db.narrow(0, offset, out_i);
    at::addmm_out(db_i, db_i, pending.dy.narrow(1, offset, out_i).t(), xa.narrow(1, r, r_i),
                  /*beta=*/0, /*alpha=*/layers_[i]->lora_options().scale);
    offset += out_i;
    r += r_i;
  }
  r = 0;
  for (size_t i = 0; i < n; ++i) {
    adapter_grads->push_back(da.narrow(0, r, adapters[i].size(0)));
    r += adapters[i].size(0);
  }
  const at::Tensor db_cast = db.to(adapters[n].scalar_type());
  offset = 0;
  for (size_t i = 0; i < n; ++i) {
    adapter_grads->push_back(db_cast.narrow(0, offset, layers_[i]->out_features()));
    offset += layers_[i]->out_features();
  }
}

at::Tensor FusedProjection::forward(const at::Tensor& x) const {
  // As a TensorList, so that autograd sees each adapter as an input (a vector it would not).
  const std::vector<at::Tensor> adapters = Adapters();
  return FusedProjectionFunction::apply(x, at::TensorList(adapters), this);
}

}  // namespace qlorad::trainer
