// The Llama decoder (Hugging Face LlamaForCausalLM semantics): embedding, pre-norm decoder layers
// with rotary GQA attention and a SwiGLU MLP, final RMSNorm and lm_head. Every projection inside
// the layers is a QLoraLinear. LoRA, quantization, activation recompute and sharding are applied
// from outside (parallel/parallelize.h) through the hooks below: the model holds no parallelism
// and no loss code.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/trainer/model/fused_projection.h"
#include "worker/trainer/model/model_config.h"
#include "worker/trainer/model/qlora_linear.h"

namespace qlorad::trainer {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(at::Tensor weight, double eps);
  // Normalizes in fp32 whatever the activation dtype, then scales in the activation dtype.
  at::Tensor forward(const at::Tensor& x);
  const at::Tensor& weight() const { return weight_; }
  double eps() const { return eps_; }

 private:
  at::Tensor weight_;
  double eps_;
};
TORCH_MODULE(RMSNorm);

// The rotary inverse frequencies [head_dim / 2] in fp32, with the config's rope scaling applied.
at::Tensor RotaryInverseFrequencies(const LlamaConfig& config, at::Device device);
// cos and sin [seq_len, head_dim] in fp32 for positions 0..seq_len-1 (HF layout: the half-size
// frequency table repeated twice, for the rotate_half convention).
std::pair<at::Tensor, at::Tensor> RotaryCosSin(int64_t seq_len, const LlamaConfig& config,
                                               at::Device device);

// Frozen projection biases by projection name ("q_proj"); absent when the architecture has none.
using ProjectionBiases = std::map<std::string, at::Tensor>;
// x [batch, seq, heads, head_dim], cos and sin broadcast to it; computed in fp32, returned in
// x's dtype.
at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const LlamaConfig& config, at::Tensor q, at::Tensor k, at::Tensor v,
                     at::Tensor o, ProjectionBiases biases = {});
  // cos, sin: fp32 [rows, head_dim] rotary tables (RotaryCosSin); `positions` (optional, int64
  // [batch, seq]) picks each token's row, else column s takes row s. Packed documents are bounded
  // by `cu_seqlens` where flash attention runs, else by `attention_mask` (bool, [seq, seq] or
  // [batch, 1, seq, seq], which also carries the sliding window there); see attention.h.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& positions = {}, const at::Tensor& attention_mask = {},
                     const at::Tensor& cu_seqlens = {});
  // Spare columns the input norm should leave after each row of x for q|k|v's adapters
  // (FusedProjection::InputRoom).
  int64_t InputRoom() const { return qkv_.InputRoom(); }
  // Appends q|k|v's and o's fused projections (FusedProjection::CastTogether).
  void AddFusedProjections(std::vector<const FusedProjection*>* out) const {
    out->insert(out->end(), {&qkv_, &o_});
  }

  QLoraLinear q_proj, k_proj, v_proj, o_proj;
  ProjectionBiases biases;
  int64_t sliding_window = 0;  // 0: every earlier token (config.sliding_windows)

 private:
  int64_t heads_, kv_heads_, head_dim_;
  FusedProjection qkv_, o_;  // the same layers, run together (fused_projection.h)
};
TORCH_MODULE(LlamaAttention);

class LlamaMlpImpl : public torch::nn::Module {
 public:
  LlamaMlpImpl(at::Tensor gate, at::Tensor up, at::Tensor down, ProjectionBiases biases = {});
  // output_unused: the caller reads only the graph (graph_only_forward.h); the fused path then
  // leaves the output's values unspecified and computes the block in backward (chunked_mlp.h).
  at::Tensor forward(const at::Tensor& x, bool output_unused = false);
  // Spare columns the post-attention norm should leave for gate|up's adapters.
  int64_t InputRoom() const { return gate_up_.InputRoom(); }
  // Appends gate|up's and down's fused projections (FusedProjection::CastTogether).
  void AddFusedProjections(std::vector<const FusedProjection*>* out) const {
    out->insert(out->end(), {&gate_up_, &down_});
  }

  QLoraLinear gate_proj, up_proj, down_proj;
  ProjectionBiases biases;

 private:
  FusedProjection gate_up_, down_;  // the same layers, run together (fused_projection.h)
};
TORCH_MODULE(LlamaMlp);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(LlamaAttention attention, LlamaMlp mlp, RMSNorm input_norm,
                        RMSNorm post_attention_norm);
  // The extras: as LlamaAttentionImpl::forward's. Under a GraphOnlyForward the output's values
  // are unspecified (the MLP waits for backward); its graph is the layer's.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& positions = {}, const at::Tensor& attention_mask = {},
                     const at::Tensor& cu_seqlens = {});
  // The fused layer's output in two parts whose sum is forward's: {h, the MLP's output}. `pending`
  // is the previous layer's MLP output, still to be added to x (undefined: x is whole). The sum is
  // made by the next norm's kernel (FusedAddRmsNorm) as it reads both, not by an add kernel of its
  // own that writes the residual stream once more. Needs FusedLayersAvailable.
  std::pair<at::Tensor, at::Tensor> ForwardParts(const at::Tensor& x, const at::Tensor& pending,
                                                 const at::Tensor& cos, const at::Tensor& sin,
                                                 const at::Tensor& positions,
                                                 const at::Tensor& attention_mask,
                                                 const at::Tensor& cu_seqlens);

  LlamaAttention self_attn;
  LlamaMlp mlp;
  RMSNorm input_layernorm, post_attention_layernorm;
};
TORCH_MODULE(LlamaDecoderLayer);

// One decoder layer's forward as a function of its input: x -> layer(x, extras...), where
// `extras` are the rotary tables, the positions, the attention mask and the document offsets. The
// model keeps one per layer for its whole life, so a runner may keep it in an autograd graph.
using LayerFunction = std::function<at::Tensor(const at::Tensor& x, at::TensorList extras)>;
// How the model runs decoder layer `layer` (the index-th, whose forward is `function`) on `x`: by
// default it just calls it; parallelize() installs activation recompute here.
using LayerRunner = std::function<at::Tensor(int64_t index, const LlamaDecoderLayerImpl& layer,
                                             const LayerFunction& function, const at::Tensor& x,
                                             at::TensorList extras)>;

class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const LlamaConfig& config, at::Tensor embed, std::vector<LlamaDecoderLayer> layers,
                 RMSNorm norm, at::Tensor lm_head);

  // input_ids [batch, seq] (int64) -> final hidden states [batch, seq, hidden].
  // `positions` (optional, [batch, seq] int64): each token's position in its document, 0 where a
  // packed document starts. Given, rotary angles follow it and attention is block-diagonal causal,
  // so each document in a packed row is computed as if it were alone. `document_offsets`
  // (optional, int32, DocumentOffsets(positions) computed ahead, e.g. on the host): saves the
  // read-back that finding them on the device takes.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& positions = {},
                     const at::Tensor& document_offsets = {});
  // Every decoder layer runs through `runner` from now on; an empty one calls layers directly.
  void SetLayerRunner(LayerRunner runner) { layer_runner_ = std::move(runner); }
  // hidden [.., hidden] -> fp32 logits [.., vocab].
  at::Tensor Logits(const at::Tensor& hidden) const;
  // [vocab, hidden]: the embedding when tied; frozen (a buffer), so never trained here.
  const at::Tensor& lm_head() const { return lm_head_; }
  // The head as a linear layer over that same frozen tensor (never quantized): the LoRA target
  // "lm_head" (PEFT's name). Logits() goes through it.
  const QLoraLinear& lm_head_linear() const { return lm_head_linear_; }

  // Every projection inside the layers with its HF module name ("model.layers.0.self_attn.q_proj").
  std::vector<std::pair<std::string, QLoraLinear>> NamedLinears() const;
  // The same, one list per decoder layer, in layer order.
  std::vector<std::vector<std::pair<std::string, QLoraLinear>>> NamedLinearsByLayer() const;
  // What lora.target_modules can name: NamedLinears() then {"lm_head", lm_head_linear()}.
  std::vector<std::pair<std::string, QLoraLinear>> NamedLoraTargets() const;
  // Every other tensor by its HF name: embedding, norms, projection biases, lm_head when untied.
  std::vector<std::pair<std::string, at::Tensor>> NamedFrozenTensors() const;
  const LlamaConfig& config() const { return config_; }
  at::ScalarType dtype() const { return embed_.scalar_type(); }
  at::Device device() const { return embed_.device(); }

 private:
  LlamaConfig config_;
  at::Tensor embed_;
  std::vector<LlamaDecoderLayer> layers_;
  std::vector<LayerFunction> layer_functions_;  // layers_[i]->forward, for layer_runner_
  // Every layer's fused projections, for casting their adapters together in forward. The layers'
  // modules (and the projections inside them) live as long as the model.
  std::vector<const FusedProjection*> fused_projections_;
  LayerRunner layer_runner_;
  RMSNorm norm_;
  at::Tensor lm_head_;  // the same tensor as embed_ when tied
  QLoraLinear lm_head_linear_{nullptr};
};
TORCH_MODULE(LlamaModel);

// Fetches a weight by its HF name, checking the shape; returns a CPU tensor of any float dtype.
using WeightSource =
    std::function<StatusOr<at::Tensor>(const std::string& name, const std::vector<int64_t>& shape)>;

// Builds the model with every weight moved to `device` in `dtype`. Weights are fetched one at a
// time, so a host only ever holds one unquantized weight beyond the model itself.
StatusOr<LlamaModel> BuildLlamaModel(const LlamaConfig& config, const WeightSource& weights,
                                     at::Device device, at::ScalarType dtype);

}  // namespace qlorad::trainer
