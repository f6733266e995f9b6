// Projections that read the same input (q/k/v; gate/up), or one alone (o; down), computed with no
// pass over the activations beyond the GEMMs themselves:
//   xa  = x A^T                  one GEMM over the adapters' A stacked [sum r, in]
//   y_i = s_i * xa_i B_i^T       into each layer's columns of the output, the scale in alpha
//   y  += x W^T                  one GEMM over the frozen weights stacked [sum out, in]
//   (dequantized
//                                in one grouped NF4 launch), beta = 1: the sum happens in its
//                                epilogue
// and a hand-written backward in the same spirit (dX = (s dY B) A, then += dY W in the big GEMM;
// dA for every adapter as one GEMM). Saved for backward: x and xa (r columns per adapter); never a
// dense weight, which backward dequantizes again.
//
// Where the outputs are at least twice as wide as the input (gate|up), the adapters ride inside
// the base GEMM instead (FoldsAdapters): the frozen weight is dequantized into the first columns
// of W+ = [W | s B] (each s_i B_i in its own rows and columns, zeros elsewhere), x is copied beside
// xa into one [x | xa] buffer, and
//   y            = [x | xa] W+^T    one GEMM writes the output once, where the path above writes it
//                                   for the adapters and then reads and writes it again
//   [dX' | s dY B] = dY W+          one GEMM reads dY once for both, where the path above reads it
//                                   in a GEMM of its own for s dY B
//   dX           = dX' + (s dY B) A  in place, in the first columns of that buffer
// The copy of x and the extra r columns cost less than the passes over the wide output they save.
// A projection fed by a kernel that leaves room (SetFedWithRoom: the decoder layer's q|k|v and
// gate|up after the fused RMSNorms, down after the fused SwiGLU) needs no copy: that kernel writes
// x with InputRoom() spare columns after each row and xa goes there. It then folds whatever its
// width; a folded dX goes back to the norm's backward kernel, which reads it in place.
//
// Where the input is wider than the output (down), backward stacks the adapters' A under W
// instead (StacksAdaptersInBackward): dY is copied beside s dY B into one [dY | s dY B] buffer and
//   dX           = [dY | s dY B] [W ; A]   one GEMM, K grown by r (a sliver of a tile), where the
//                                         scheme above writes (s dY B) A [tokens, in] and the
//                                         GEMM's epilogue reads it back
//
// The layers stay ordinary QLoraLinear modules (their parameters, names and adapters files are
// unchanged); this is another way to run them, taken when Applies().
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "worker/trainer/model/adapter_cast_cache.h"
#include "worker/trainer/model/qlora_linear.h"

namespace qlorad::trainer {

// How far the adapters are folded into the base GEMMs (the header's second scheme): not at all,
// in forward only (backward then runs its base GEMM on N = in columns, a whole number of tiles,
// and s dY B on its own), or both ways. QLORAD_FOLD_LORA=0 / =both / anything else or unset: in
// forward only, which measured 0.6 and 1.1 ms faster than both ways on a 1B 4 x 2048 step
// (bench/results/2026-12-08-h100-cb296ea-gpu_run.txt).
enum class LoraFolding { kOff, kForward, kBoth };
LoraFolding LoraFoldingFromEnvironment();
// Whether backward may stack the adapters' A under W (StacksAdaptersInBackward); off with
// QLORAD_BACKWARD_STACK=0, for side-by-side timings.
bool BackwardStackingFromEnvironment();

class FusedProjection {
 public:
  FusedProjection() = default;
  // `layers` read the same input: equal in_features.
  explicit FusedProjection(std::vector<QLoraLinear> layers);

  // Whether forward() computes what the layers' own forwards would for `x`: every layer holds its
  // frozen weight itself (no ExternalWeights), and either none has an adapter or each has one that
  // computes in x's dtype with no dropout in effect.
  bool Applies(const at::Tensor& x) const;
  bool AppliesTo(at::ScalarType dtype) const;  // Applies, for any x of `dtype`
  // The adapters of every projection it Applies to in `dtype` cast at once, where each would cast
  // its own at its first use: one multi-tensor copy (a kernel for about a hundred adapters) instead
  // of one or two kernels per adapter (13 a Llama decoder layer). A model's forward calls it once,
  // before its layers run; their casts are then the cached ones (AdapterCastCache).
  static void CastTogether(const std::vector<const FusedProjection*>& projections,
                           at::ScalarType dtype);
  // x [..., in] -> [..., out_features()]: the layers' outputs side by side, in order.
  at::Tensor forward(const at::Tensor& x) const;
  // The frozen weights stacked [out_features(), in] in `dtype`.
  at::Tensor StackedWeight(at::ScalarType dtype) const;
  // Whether the adapters are folded into the base GEMM (the header's second scheme) whatever the
  // input: with adapters, outputs at least twice as wide as the input, and folding not kOff.
  bool FoldsAdapters() const;
  // Whether they are for this input [tokens, in]: FoldsAdapters(), or fed with room: x2d has
  // InputRoom() spare columns after each row.
  bool FoldsAdaptersFor(const at::Tensor& x2d) const;
  // The weight the GEMMs take: W+ = [W | s B] [out_features(), in + sum of r] when
  // FoldsAdapters(), else StackedWeight. `adapters`: Adapters(), as the autograd function holds
  // them.
  at::Tensor GemmWeight(at::ScalarType dtype, at::TensorList adapters) const;
  // Whether backward computes dX = [dY | s dY B] [W ; A], one GEMM whose K grows by the adapters'
  // rank, where the input is wider than the output (down): copying dY beside s dY B costs
  // [tokens, out] twice, where writing (s dY B) A first and adding dY W onto it in the GEMM's
  // epilogue (beta = 1) costs [tokens, in] twice. Folding must be on.
  bool StacksAdaptersInBackward() const;
  // The weight backward's dX GEMM takes: [W ; A] [out_features() + sum of r, in] when
  // StacksAdaptersInBackward(), else GemmWeight.
  at::Tensor BackwardWeight(at::ScalarType dtype, at::TensorList adapters) const;

  // Marks the projection as fed by a kernel that leaves InputRoom() columns after each row of its
  // output (the fused RMSNorms and SwiGLU) and reads a dX whose rows are spaced wider (the header
  // says why).
  void SetFedWithRoom(bool fed) { fed_with_room_ = fed; }
  // LoraFoldingFromEnvironment() unless set (tests compare the ways side by side).
  void set_folding(LoraFolding folding) { folding_ = folding; }
  // BackwardStackingFromEnvironment() unless set.
  void set_backward_stacking(bool stack) { stack_backward_ = stack; }
  // The spare columns its input should carry: the adapters' total rank (rounded up to 8) when it
  // is fed with room and folding is on, else 0.
  int64_t InputRoom() const;

  // The math of forward() and of its backward, for autograd functions that fuse the projection
  // with what computes its input (FusedSwigluDown). `adapters`: Adapters(), as autograd inputs.
  std::vector<at::Tensor> Adapters() const;  // every A, then every B; none without adapters
  // x2d [tokens, in] -> [tokens, out_features()]; *xa = x A^T (undefined without adapters).
  // `weight`: GemmWeight(x2d's dtype) when the caller has it already (several chunks of rows
  // through one projection dequantize once); undefined: dequantized here, for this call alone.
  // *x_kept (if given): the x that backward should read, x2d itself or, when the adapters are
  // folded, its copy beside xa, so that a caller keeping it for backward lets x2d go (both views
  // of one buffer: keeping the two costs no more than x2d and xa did).
  at::Tensor Forward2d(const at::Tensor& x2d, at::TensorList adapters, at::Tensor* xa,
                       const at::Tensor& weight = {}, at::Tensor* x_kept = nullptr) const;
  // x2d A^T [tokens, sum of r]: the adapters' first GEMM alone, as Forward2d computes it into *xa.
  at::Tensor LoraInput2d(const at::Tensor& x2d, at::TensorList adapters) const;
  // dy [tokens, out_features()] -> dx (undefined unless want_dx); appends every dA, then every dB
  // (in the adapters' dtype) to *adapter_grads. `weight` as for Forward2d, or BackwardWeight where
  // the adapters are stacked in backward. With the adapters
  // folded, dx is the first columns of a wider buffer (rows in+r apart): view it, don't assume it
  // is contiguous.
  at::Tensor Backward2d(const at::Tensor& x2d, const at::Tensor& xa, at::TensorList adapters,
                        const at::Tensor& dy, bool want_dx, std::vector<at::Tensor>* adapter_grads,
                        const at::Tensor& weight = {}) const;

  // Backward2d in two halves, for a caller whose x2d is cheaper to produce after dx than before
  // (the MLP: the SwiGLU backward kernel writes h, down's input, beside dgate|dup, where a forward
  // pass would read gate and up once more). Only the adapters' gradients need x2d and xa.
  struct PendingAdapterGrads {
    at::Tensor dy;   // in the activations' dtype, dB's left factor
    at::Tensor dyb;  // s dY B [tokens, sum of r], dA's left factor
  };
  // dx as Backward2d computes it for activations of `dtype`; keeps the rest in *pending.
  at::Tensor BackwardInput2d(at::ScalarType dtype, at::TensorList adapters, const at::Tensor& dy,
                             bool want_dx, PendingAdapterGrads* pending,
                             const at::Tensor& weight = {}) const;
  // Appends every dA, then every dB, as Backward2d does (nothing without adapters).
  void AdapterGrads2d(const PendingAdapterGrads& pending, const at::Tensor& x2d,
                      const at::Tensor& xa, at::TensorList adapters,
                      std::vector<at::Tensor>* adapter_grads) const;

  const std::vector<QLoraLinear>& layers() const { return layers_; }
  int64_t out_features() const { return out_features_; }
  bool has_lora() const { return !layers_.empty() && layers_.front()->has_lora(); }
  // How many times the adapters were cast to the activations' dtype (AdapterCastCache), for tests.
  int64_t adapter_casts() const { return casts_->fills(); }

 private:
  // The stacked frozen weights written into `out` [out_features(), in], contiguous or the first
  // columns of a wider matrix.
  void StackedWeightInto(const at::Tensor& out) const;
  // GemmWeight, W+ when `fold`.
  at::Tensor WeightFor(at::ScalarType dtype, at::TensorList adapters, bool fold) const;
  // dyb = s dY B: every adapter's slice of dL/d(xa), side by side in `dyb` [tokens, sum of r]
  // (the scale in the GEMM's alpha).
  void ScaledGradTimesB(const at::Tensor& dy, const AdapterCastCache::Casts& casts,
                        const at::Tensor& dyb) const;
  // BackwardInput2d for a forward that folded (`fold`: `weight` may be W+): folded too unless
  // folding is kForward.
  at::Tensor BackwardInputFor(at::ScalarType dtype, at::TensorList adapters, const at::Tensor& dy,
                              bool want_dx, PendingAdapterGrads* pending, const at::Tensor& weight,
                              bool fold) const;
  bool FoldingOn() const;
  // The adapters' total rank (xa's columns); 0 without adapters.
  int64_t LoraColumns() const;
  // Whether x2d [tokens, in] is the first columns of rows InputRoom() wider, within its storage.
  bool HasRoom(const at::Tensor& x2d) const;
  int64_t in_features() const { return layers_.front()->in_features(); }

  std::vector<QLoraLinear> layers_;
  int64_t out_features_ = 0;
  bool fed_with_room_ = false;
  LoraFolding folding_ = LoraFoldingFromEnvironment();
  bool stack_backward_ = BackwardStackingFromEnvironment();
  // Shared by copies of this projection (they run the same layers).
  std::shared_ptr<AdapterCastCache> casts_ = std::make_shared<AdapterCastCache>();
};

}  // namespace qlorad::trainer
