// A linear layer whose base weight is frozen (dense, or NF4-packed through qlorad::ops) with an
// optional trainable LoRA adapter: y = x W^T + scale * B(A(dropout(x))).
// The adapter's parameters are fp32; it computes in LoraOptions::compute_dtype: fp32 by default
// (the input upcast, as in PEFT with QLoRA) or the activations' dtype. Its output is cast back to
// the activation dtype before the add.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <optional>
#include <utility>

#include "kernels/torch/nf4_ops.h"

namespace qlorad::trainer {

struct LoraOptions {
  int64_t r = 16;
  double scale = 1.0;  // alpha / r, or alpha / sqrt(r) with rsLoRA
  double dropout = 0.0;
  at::ScalarType compute_dtype = at::kFloat;  // of the adapter's matmuls (lora.compute_precision)
};

// A frozen weight in the compute dtype, from wherever it lives (dequantized, cast, gathered);
// `backward` says backward is asking, not forward.
using FrozenWeightSource = std::function<at::Tensor(at::ScalarType dtype, bool backward)>;

// x W^T for a frozen W that autograd never keeps: backward asks `source` for W again. Keeping it
// would hold every projection's dense copy from forward to backward, about 2 bytes per base
// parameter in a bf16 run: the memory a 4-bit (or sharded) base is meant to save. bitsandbytes'
// 4-bit matmul likewise keeps only the quantized state. `source` must outlive the graph.
at::Tensor FrozenLinear(const at::Tensor& x, const FrozenWeightSource& source);

// Where a layer's weights come from when they live elsewhere (parallelize() keeps them as shards
// across ranks): the layer itself knows nothing of ranks.
struct ExternalWeights {
  std::function<at::Tensor(const at::Tensor& x)> base;      // x W^T with the frozen weight
  std::function<std::pair<at::Tensor, at::Tensor>()> lora;  // full A and B for this forward
};

class QLoraLinearImpl : public torch::nn::Module {
 public:
  // `weight` [out, in], already on its device in the compute dtype.
  explicit QLoraLinearImpl(at::Tensor weight);
  // Replaces the dense weight by its NF4 form; the dense copy is freed.
  void QuantizeNF4(int64_t block_size, bool double_quant);
  // Replaces the dense weight (a placeholder) by a stored NF4 weight of the same [out, in] shape,
  // moved to the layer's device: pre-quantized checkpoints are used as stored.
  void UseNF4(const ops::NF4Weight& weight);
  // Adds A [r, in] ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a=sqrt(5), PEFT's choice)
  // drawn from `generator` on the CPU, so CPU and GPU runs start from the same adapter, and B = 0.
  void AddLora(const LoraOptions& options, at::Generator generator);

  // From now on the forward takes its weights from `weights`; the layer's own frozen weight and
  // LoRA parameters are freed (lora_a() and lora_b() become empty).
  void UseExternalWeights(ExternalWeights weights);

  at::Tensor forward(const at::Tensor& x);

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  bool quantized() const { return nf4_.has_value(); }
  bool has_lora() const { return lora_a_.defined(); }
  // Whether UseExternalWeights() took the weights elsewhere.
  bool external_weights() const { return external_.has_value(); }
  const LoraOptions& lora_options() const { return lora_; }
  const at::Tensor& lora_a() const { return lora_a_; }
  const at::Tensor& lora_b() const { return lora_b_; }
  // The frozen weight in `dtype` (dequantized when NF4).
  at::Tensor BaseWeight(at::ScalarType dtype) const;
  // The NF4 form of the frozen weight, if quantized; else the dense one.
  const std::optional<ops::NF4Weight>& nf4_weight() const { return nf4_; }
  const at::Tensor& dense_weight() const { return dense_; }

 private:
  int64_t out_features_ = 0;
  int64_t in_features_ = 0;
  at::Tensor dense_;  // undefined once quantized
  std::optional<ops::NF4Weight> nf4_;
  LoraOptions lora_;
  at::Tensor lora_a_;
  at::Tensor lora_b_;
  std::optional<ExternalWeights> external_;
  FrozenWeightSource own_weight_;  // BaseWeight(), for FrozenLinear
};
TORCH_MODULE(QLoraLinear);

// Whether NF4 weights can live on `device`: qlorad_ops is linked in and has kernels registered
// for that device type (a CPU-only kernels build has no CUDA ones).
bool Nf4OpsAvailable(at::DeviceType device);

}  // namespace qlorad::trainer
