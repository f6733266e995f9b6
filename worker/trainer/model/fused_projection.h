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
// The layers stay ordinary QLoraLinear modules (their parameters, names and adapters files are
// unchanged); this is another way to run them, taken when Applies().
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "worker/trainer/model/adapter_cast_cache.h"
#include "worker/trainer/model/qlora_linear.h"

namespace qlorad::trainer {

class FusedProjection {
 public:
  FusedProjection() = default;
  // `layers` read the same input: equal in_features.
  explicit FusedProjection(std::vector<QLoraLinear> layers);

  // Whether forward() computes what the layers' own forwards would for `x`: every layer holds its
  // frozen weight itself (no ExternalWeights), and either none has an adapter or each has one that
  // computes in x's dtype with no dropout in effect.
  bool Applies(const at::Tensor& x) const;
  // x [..., in] -> [..., out_features()]: the layers' outputs side by side, in order.
  at::Tensor forward(const at::Tensor& x) const;
  // The frozen weights stacked [out_features(), in] in `dtype`.
  at::Tensor StackedWeight(at::ScalarType dtype) const;

  // The math of forward() and of its backward, for autograd functions that fuse the projection
  // with what computes its input (FusedSwigluDown). `adapters`: Adapters(), as autograd inputs.
  std::vector<at::Tensor> Adapters() const;  // every A, then every B; none without adapters
  // x2d [tokens, in] -> [tokens, out_features()]; *xa = x A^T (undefined without adapters).
  // `weight`: StackedWeight(x2d's dtype) when the caller has it already (several chunks of rows
  // through one projection dequantize once); undefined: dequantized here, for this call alone.
  at::Tensor Forward2d(const at::Tensor& x2d, at::TensorList adapters, at::Tensor* xa,
                       const at::Tensor& weight = {}) const;
  // x2d A^T [tokens, sum of r]: the adapters' first GEMM alone, as Forward2d computes it into *xa.
  at::Tensor LoraInput2d(const at::Tensor& x2d, at::TensorList adapters) const;
  // dy [tokens, out_features()] -> dx (undefined unless want_dx); appends every dA, then every dB
  // (in the adapters' dtype) to *adapter_grads. `weight` as for Forward2d.
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
  std::vector<QLoraLinear> layers_;
  int64_t out_features_ = 0;
  // Shared by copies of this projection (they run the same layers).
  std::shared_ptr<AdapterCastCache> casts_ = std::make_shared<AdapterCastCache>();
};

}  // namespace qlorad::trainer
