#include "worker/trainer/model/llama_model.h"

#include <cmath>
#include <map>
#include <optional>
#include <tuple>
#include <utility>

#include "worker/trainer/model/attention.h"
#include "worker/trainer/model/chunked_mlp.h"
#include "worker/trainer/model/fused_layers.h"
#include "worker/trainer/model/graph_only_forward.h"
#include "worker/trainer/model/recompute_keep.h"

namespace qlorad::trainer {

RMSNormImpl::RMSNormImpl(at::Tensor weight, double eps) : weight_(std::move(weight)), eps_(eps) {
  register_buffer("weight", weight_);
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return weight_ * normed.to(x.scalar_type());
}

at::Tensor RotaryInverseFrequencies(const LlamaConfig& c, at::Device device) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  // Same arithmetic as HF (1 / theta^(2i/d) in fp32 from an int64 arange, scaling in fp32 with
  // double scalars), so angles match it bit for bit rather than a more exact fp64 table.
  at::Tensor exponents = at::arange(0, c.head_dim, 2, f32.dtype(at::kLong)).to(at::kFloat) /
                         static_cast<double>(c.head_dim);
  at::Tensor inv_freq = 1.0 / at::pow(c.rope_theta, exponents);
  const RopeScaling& r = c.rope_scaling;
  if (r.type == "linear") return inv_freq / r.factor;
  if (r.type != "llama3") return inv_freq;
  const double context = static_cast<double>(r.original_max_position_embeddings);
  const double low_freq_wavelen = context / r.low_freq_factor;
  const double high_freq_wavelen = context / r.high_freq_factor;
  at::Tensor wavelen = 2 * M_PI / inv_freq;
  at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / r.factor, inv_freq);
  at::Tensor smooth =
      (context / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
  at::Tensor medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return at::where(medium, smoothed, scaled);
}

std::pair<at::Tensor, at::Tensor> RotaryCosSin(int64_t seq_len, const LlamaConfig& config,
                                               at::Device device) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  at::Tensor inv_freq = RotaryInverseFrequencies(config, device);
  at::Tensor positions = at::arange(seq_len, f32.dtype(at::kLong)).to(at::kFloat);
  at::Tensor freqs = at::outer(positions, inv_freq);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  at::Tensor x32 = x.to(at::kFloat);
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x32.narrow(-1, half, half), x32.narrow(-1, 0, half)}, -1);
  return (x32 * cos + rotated * sin).to(x.scalar_type());
}

namespace {

// Each of `fused`'s layers applied to x, side by side in one tensor [.., sum of out_features],
// plus their frozen biases: computed as one fused projection when that applies, else undefined.
at::Tensor ProjectFused(const FusedProjection& fused, const std::vector<std::string>& names,
                        const ProjectionBiases& biases, const at::Tensor& x) {
  if (!fused.Applies(x)) return at::Tensor();
  at::Tensor y = fused.forward(x);
  if (biases.empty()) return y;
  std::vector<at::Tensor> parts;
  for (size_t i = 0; i < names.size(); ++i) {
    auto it = biases.find(names[i]);
    parts.push_back(it != biases.end()
                        ? it->second
                        : at::zeros({fused.layers()[i]->out_features()}, y.options()));
  }
  return y + at::cat(parts);
}

// The same, one tensor per layer: slices of the fused output, or each layer's own forward.
std::vector<at::Tensor> Project(const FusedProjection& fused, const std::vector<std::string>& names,
                                const ProjectionBiases& biases, const at::Tensor& x,
                                at::Tensor fused_output = {}) {
  const auto& layers = fused.layers();
  if (!fused_output.defined()) fused_output = ProjectFused(fused, names, biases, x);
  // One layer's output is all of the fused output. A narrow to all of it would still be a slice
  // to autograd, whose backward fills a tensor of zeros and copies the gradient into it (o_proj's:
  // 0.57 ms of a 1B 4 x 2048 step on an H100, bench/results/2026-12-08-h100-cb296ea-trace-*).
  if (fused_output.defined() && layers.size() == 1) return {fused_output};
  std::vector<at::Tensor> out;
  int64_t offset = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (fused_output.defined()) {
      out.push_back(fused_output.narrow(-1, offset, layers[i]->out_features()));
      offset += layers[i]->out_features();
      continue;
    }
    auto it = biases.find(names[i]);
    QLoraLinear layer = layers[i];  // a handle: forward is non-const (dropout mode)
    at::Tensor y = layer->forward(x);
    out.push_back(it == biases.end() ? y : y + it->second);
  }
  return out;
}

// cos and sin [rows, head_dim] broadcast to [batch, seq, heads, head_dim]: each token's row by
// `positions` when given, else row s for column s.
std::pair<at::Tensor, at::Tensor> BroadcastRotary(const at::Tensor& cos, const at::Tensor& sin,
                                                  const at::Tensor& positions, int64_t batch,
                                                  int64_t seq) {
  if (!positions.defined()) {
    return {cos.narrow(0, 0, seq).view({1, seq, 1, -1}),
            sin.narrow(0, 0, seq).view({1, seq, 1, -1})};
  }
  const at::Tensor rows = positions.reshape({-1});
  return {cos.index_select(0, rows).view({batch, seq, 1, -1}),
          sin.index_select(0, rows).view({batch, seq, 1, -1})};
}

void RegisterBiases(torch::nn::Module& module, const ProjectionBiases& biases) {
  for (const auto& [name, bias] : biases) module.register_buffer(name + "_bias", bias);
}

}  // namespace

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& config, at::Tensor q, at::Tensor k,
                                       at::Tensor v, at::Tensor o, ProjectionBiases biases_in)
    : q_proj(register_module("q_proj", QLoraLinear(std::move(q)))),
      k_proj(register_module("k_proj", QLoraLinear(std::move(k)))),
      v_proj(register_module("v_proj", QLoraLinear(std::move(v)))),
      o_proj(register_module("o_proj", QLoraLinear(std::move(o)))),
      biases(std::move(biases_in)),
      heads_(config.num_attention_heads),
      kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      qkv_({q_proj, k_proj, v_proj}),
      o_({o_proj}) {
  RegisterBiases(*this, biases);
  qkv_.SetFedWithRoom(true);  // the decoder layer's input norm (LlamaDecoderLayerImpl::forward)
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos,
                                       const at::Tensor& sin, const at::Tensor& positions,
                                       const at::Tensor& attention_mask,
                                       const at::Tensor& cu_seqlens) {
  const int64_t batch = x.size(0), seq = x.size(1);
  const std::vector<std::string> names = {"q_proj", "k_proj", "v_proj"};
  const at::Tensor qkv = ProjectFused(qkv_, names, biases, x);
  const AttentionInputs inputs{heads_, kv_heads_, head_dim_,  cos,
                               sin,    positions, cu_seqlens, sliding_window};
  at::Tensor out;
  if (qkv.defined() && FusedRotaryAttentionAvailable(qkv, inputs)) {
    out = FusedRotaryAttention(qkv, inputs);
  } else {
    // [batch, seq, heads, head_dim] throughout: the projections' layout, and flash attention's.
    const auto parts = Project(qkv_, names, biases, x, qkv);
    const auto [cos_b, sin_b] = BroadcastRotary(cos, sin, positions, batch, seq);
    const at::Tensor q = ApplyRotary(parts[0].view({batch, seq, heads_, head_dim_}), cos_b, sin_b);
    const at::Tensor k =
        ApplyRotary(parts[1].view({batch, seq, kv_heads_, head_dim_}), cos_b, sin_b);
    const at::Tensor v = parts[2].view({batch, seq, kv_heads_, head_dim_});
    out = CausalAttention(q, k, v, cu_seqlens, attention_mask, sliding_window)
              .reshape({batch, seq, heads_ * head_dim_});
  }
  return Project(o_, {"o_proj"}, biases, out)[0];
}

LlamaMlpImpl::LlamaMlpImpl(at::Tensor gate, at::Tensor up, at::Tensor down,
                           ProjectionBiases biases_in)
    : gate_proj(register_module("gate_proj", QLoraLinear(std::move(gate)))),
      up_proj(register_module("up_proj", QLoraLinear(std::move(up)))),
      down_proj(register_module("down_proj", QLoraLinear(std::move(down)))),
      biases(std::move(biases_in)),
      gate_up_({gate_proj, up_proj}),
      down_({down_proj}) {
  RegisterBiases(*this, biases);
  gate_up_.SetFedWithRoom(true);  // the decoder layer's post-attention norm
  down_.SetFedWithRoom(true);     // the fused SwiGLU (FusedSwigluDown)
}

at::Tensor LlamaMlpImpl::forward(const at::Tensor& x, bool output_unused) {
  const bool fused_layers = FusedLayersAvailable(x.device(), x.scalar_type());
  // The block ChunkedMlp can run: the one a recompute hands it, and whose gate|up a checkpointed
  // forward keeps for it when asked (recompute_keep.h). Asked only where it matters, so that
  // other forwards check no more than they did.
  const auto chunkable = [&] {
    return fused_layers && biases.empty() && gate_up_.Applies(x) && down_.Applies(x);
  };
  RecomputeKeep* keep = CurrentRecomputeKeep(&KeptParts::mlp);
  if (output_unused && at::GradMode::is_enabled() && chunkable()) {
    // Nothing reads the output: the whole block waits for backward, which computes it in chunks
    // (from the gate|up its forward kept, if it kept one).
    const at::Tensor kept_gate_up =
        keep != nullptr && keep->replaying() ? keep->Next(1, "mlp")[0] : at::Tensor();
    return ChunkedMlp(x, gate_up_, down_, /*output_unused=*/true, /*chunk_rows=*/0, kept_gate_up);
  }
  const std::vector<std::string> names = {"gate_proj", "up_proj"};
  const at::Tensor gate_up = ProjectFused(gate_up_, names, biases, x);
  if (keep != nullptr && !keep->replaying() && chunkable()) keep->Keep({gate_up});
  const bool fused = gate_up.defined() && fused_layers;
  if (fused && down_.Applies(gate_up) && biases.count("down_proj") == 0) {
    return FusedSwigluDown(gate_up, down_);
  }
  at::Tensor gated;
  if (fused) {
    gated = FusedSwiglu(gate_up);
  } else {
    const auto parts = Project(gate_up_, names, biases, x, gate_up);
    gated = at::silu(parts[0]) * parts[1];
  }
  return Project(down_, {"down_proj"}, biases, gated)[0];
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(LlamaAttention attention, LlamaMlp mlp_in,
                                             RMSNorm input_norm, RMSNorm post_attention_norm)
    : self_attn(register_module("self_attn", std::move(attention))),
      mlp(register_module("mlp", std::move(mlp_in))),
      input_layernorm(register_module("input_layernorm", std::move(input_norm))),
      post_attention_layernorm(
          register_module("post_attention_layernorm", std::move(post_attention_norm))) {}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& x, const at::Tensor& cos,
                                          const at::Tensor& sin, const at::Tensor& positions,
                                          const at::Tensor& attention_mask,
                                          const at::Tensor& cu_seqlens) {
  if (!FusedLayersAvailable(x.device(), x.scalar_type())) {
    at::Tensor h = x + self_attn->forward(input_layernorm->forward(x), cos, sin, positions,
                                          attention_mask, cu_seqlens);
    return h + mlp->forward(post_attention_layernorm->forward(h));
  }
  auto [h, mlp_out] =
      ForwardParts(x, /*pending=*/{}, cos, sin, positions, attention_mask, cu_seqlens);
  return h + mlp_out;
}

std::pair<at::Tensor, at::Tensor> LlamaDecoderLayerImpl::ForwardParts(
    const at::Tensor& x, const at::Tensor& pending, const at::Tensor& cos, const at::Tensor& sin,
    const at::Tensor& positions, const at::Tensor& attention_mask, const at::Tensor& cu_seqlens) {
  const auto& in_norm = *input_layernorm;
  const auto& post_norm = *post_attention_layernorm;
  // The layer's input (x, plus the previous MLP's output when that is pending) feeds the norm and
  // the residual add; its two gradients meet in the norm's backward kernel. Each norm leaves the
  // columns its projection's adapters fill (fused_projection.h).
  at::Tensor in_normed, residual;
  if (pending.defined()) {
    std::tie(residual, in_normed) =
        FusedAddRmsNorm(pending, x, in_norm.weight(), in_norm.eps(), self_attn->InputRoom());
  } else {
    std::tie(in_normed, residual) =
        FusedRmsNormFork(x, in_norm.weight(), in_norm.eps(), self_attn->InputRoom());
  }
  const at::Tensor attention =
      self_attn->forward(in_normed, cos, sin, positions, attention_mask, cu_seqlens);
  // The residual add and the next norm in one kernel.
  const auto [h, normed] =
      FusedAddRmsNorm(attention, residual, post_norm.weight(), post_norm.eps(), mlp->InputRoom());
  // The MLP's output only joins the residual stream into the layer's output: when no one reads
  // that (a recompute for backward), neither are the MLP's output values read.
  return {h, mlp->forward(normed, /*output_unused=*/InGraphOnlyForward())};
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& config, at::Tensor embed,
                               std::vector<LlamaDecoderLayer> layers, RMSNorm norm,
                               at::Tensor lm_head)
    : config_(config),
      embed_(std::move(embed)),
      layers_(std::move(layers)),
      norm_(register_module("norm", std::move(norm))),
      lm_head_(std::move(lm_head)) {
  register_buffer("embed_tokens", embed_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    register_module("layers_" + std::to_string(i), layers_[i]);
    if (!config_.sliding_windows.empty()) {
      layers_[i]->self_attn->sliding_window = config_.sliding_windows[i];
    }
    layer_functions_.emplace_back(
        [layer = layers_[i].get()](const at::Tensor& x, at::TensorList extras) {
          return layer->forward(x, extras[0], extras[1], extras[2], extras[3], extras[4]);
        });
  }
  for (const auto& layer : layers_) {
    layer->self_attn->AddFusedProjections(&fused_projections_);
    layer->mlp->AddFusedProjections(&fused_projections_);
  }
  if (!config_.tie_word_embeddings) register_buffer("lm_head", lm_head_);
  // A submodule, so train()/eval() reach its LoRA dropout; its weight is lm_head_ itself.
  lm_head_linear_ = register_module("lm_head_linear", QLoraLinear(lm_head_));
}

at::Tensor LlamaModelImpl::forward(const at::Tensor& input_ids, const at::Tensor& positions,
                                   const at::Tensor& document_offsets) {
  const int64_t seq = input_ids.size(1);
  at::Tensor h = at::embedding(embed_, input_ids);
  // Every layer's adapters cast to the activations' dtype in one go (once per optimizer step: the
  // casts are cached), before any layer asks for its own.
  FusedProjection::CastTogether(fused_projections_, h.scalar_type());
  // Positions never exceed the row length, so a table of seq rows serves packed rows too.
  const auto [cos, sin] = RotaryCosSin(seq, config_, device());
  // Document bounds in the form the attention kernel takes: offsets for flash attention, a dense
  // mask otherwise, built once per forward for each distinct window (Mistral: one; Qwen2: up to
  // two), not again in every layer.
  const bool flash = UsesFlashAttention(device(), h.scalar_type(), config_.head_dim);
  at::Tensor cu_seqlens;
  if (flash && positions.defined()) {
    cu_seqlens = document_offsets.defined() ? document_offsets : DocumentOffsets(positions);
  }
  std::map<int64_t, at::Tensor> masks;
  const bool fused = FusedLayersAvailable(h.device(), h.scalar_type());
  at::Tensor pending;  // the last layer's MLP output, not yet added to h (ForwardParts)
  for (size_t i = 0; i < layers_.size(); ++i) {
    const int64_t window = layers_[i]->self_attn->sliding_window;
    auto [mask, added] = masks.try_emplace(flash ? 0 : window);
    if (added && !flash) {
      mask->second = positions.defined() ? DocumentMask(positions, window)
                                         : SlidingWindowMask(seq, window, device());
    }
    if (layer_runner_) {
      h = layer_runner_(static_cast<int64_t>(i), *layers_[i], layer_functions_[i], h,
                        {cos, sin, positions, mask->second, cu_seqlens});
    } else if (fused) {
      // Each layer's output stays in two parts; the next norm adds them as it reads them.
      std::tie(h, pending) =
          layers_[i]->ForwardParts(h, pending, cos, sin, positions, mask->second, cu_seqlens);
    } else {
      h = layers_[i]->forward(h, cos, sin, positions, mask->second, cu_seqlens);
    }
  }
  // The final norm by the layers' fused kernel where there is one: the module's aten ops (six
  // kernels forward, about ten backward, fp32 temporaries) took about 0.5 ms of a 1B 4 x 2048 step
  // on an H100 where the kernel takes 0.06 ms. Without a runner it also adds the last layer's two
  // parts.
  if (pending.defined()) {
    return FusedAddRmsNorm(pending, h, norm_->weight(), norm_->eps(), /*spare_columns=*/0).second;
  }
  if (fused) return FusedRmsNorm(h, norm_->weight(), norm_->eps());
  return norm_->forward(h);
}

at::Tensor LlamaModelImpl::Logits(const at::Tensor& hidden) const {
  QLoraLinear head = lm_head_linear_;  // a handle: forward is non-const (dropout mode)
  return head->forward(hidden).to(at::kFloat);
}

std::vector<std::vector<std::pair<std::string, QLoraLinear>>> LlamaModelImpl::NamedLinearsByLayer()
    const {
  std::vector<std::vector<std::pair<std::string, QLoraLinear>>> out(layers_.size());
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const auto& a = layers_[i]->self_attn;
    const auto& m = layers_[i]->mlp;
    out[i] = {{p + "self_attn.q_proj", a->q_proj}, {p + "self_attn.k_proj", a->k_proj},
              {p + "self_attn.v_proj", a->v_proj}, {p + "self_attn.o_proj", a->o_proj},
              {p + "mlp.gate_proj", m->gate_proj}, {p + "mlp.up_proj", m->up_proj},
              {p + "mlp.down_proj", m->down_proj}};
  }
  return out;
}

std::vector<std::pair<std::string, QLoraLinear>> LlamaModelImpl::NamedLinears() const {
  std::vector<std::pair<std::string, QLoraLinear>> out;
  for (auto& layer : NamedLinearsByLayer()) {
    out.insert(out.end(), std::make_move_iterator(layer.begin()),
               std::make_move_iterator(layer.end()));
  }
  return out;
}

std::vector<std::pair<std::string, QLoraLinear>> LlamaModelImpl::NamedLoraTargets() const {
  auto out = NamedLinears();
  out.emplace_back("lm_head", lm_head_linear_);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> LlamaModelImpl::NamedFrozenTensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out = {{"model.embed_tokens.weight", embed_}};
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const auto& [name, bias] : layers_[i]->self_attn->biases) {
      out.emplace_back(p + "self_attn." + name + ".bias", bias);
    }
    for (const auto& [name, bias] : layers_[i]->mlp->biases) {
      out.emplace_back(p + "mlp." + name + ".bias", bias);
    }
    out.emplace_back(p + "input_layernorm.weight", layers_[i]->input_layernorm->weight());
    out.emplace_back(p + "post_attention_layernorm.weight",
                     layers_[i]->post_attention_layernorm->weight());
  }
  out.emplace_back("model.norm.weight", norm_->weight());
  if (!config_.tie_word_embeddings) out.emplace_back("lm_head.weight", lm_head_);
  return out;
}

StatusOr<LlamaModel> BuildLlamaModel(const LlamaConfig& c, const WeightSource& weights,
                                     at::Device device, at::ScalarType dtype) {
  auto fetch = [&](const std::string& name,
                   const std::vector<int64_t>& shape) -> StatusOr<at::Tensor> {
    QLORAD_ASSIGN_OR_RETURN(at::Tensor t, weights(name, shape));
    if (!at::isFloatingType(t.scalar_type())) {
      return InvalidArgument("tensor '" + name + "': expected a floating-point weight, got " +
                             c10::toString(t.scalar_type()));
    }
    return t.to(device, dtype).requires_grad_(false);
  };
  const int64_t q_out = c.num_attention_heads * c.head_dim;
  const int64_t kv_out = c.num_key_value_heads * c.head_dim;
  QLORAD_ASSIGN_OR_RETURN(at::Tensor embed,
                          fetch("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}));
  std::vector<LlamaDecoderLayer> layers;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    QLORAD_ASSIGN_OR_RETURN(at::Tensor q,
                            fetch(p + "self_attn.q_proj.weight", {q_out, c.hidden_size}));
    QLORAD_ASSIGN_OR_RETURN(at::Tensor k,
                            fetch(p + "self_attn.k_proj.weight", {kv_out, c.hidden_size}));
    QLORAD_ASSIGN_OR_RETURN(at::Tensor v,
                            fetch(p + "self_attn.v_proj.weight", {kv_out, c.hidden_size}));
    QLORAD_ASSIGN_OR_RETURN(at::Tensor o,
                            fetch(p + "self_attn.o_proj.weight", {c.hidden_size, q_out}));
    QLORAD_ASSIGN_OR_RETURN(
        at::Tensor gate, fetch(p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size}));
    QLORAD_ASSIGN_OR_RETURN(at::Tensor up,
                            fetch(p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size}));
    QLORAD_ASSIGN_OR_RETURN(
        at::Tensor down, fetch(p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size}));
    QLORAD_ASSIGN_OR_RETURN(at::Tensor in_norm,
                            fetch(p + "input_layernorm.weight", {c.hidden_size}));
    QLORAD_ASSIGN_OR_RETURN(at::Tensor post_norm,
                            fetch(p + "post_attention_layernorm.weight", {c.hidden_size}));
    ProjectionBiases attention_biases, mlp_biases;
    if (c.qkv_bias) {
      QLORAD_ASSIGN_OR_RETURN(attention_biases["q_proj"],
                              fetch(p + "self_attn.q_proj.bias", {q_out}));
      QLORAD_ASSIGN_OR_RETURN(attention_biases["k_proj"],
                              fetch(p + "self_attn.k_proj.bias", {kv_out}));
      QLORAD_ASSIGN_OR_RETURN(attention_biases["v_proj"],
                              fetch(p + "self_attn.v_proj.bias", {kv_out}));
    }
    if (c.o_bias) {
      QLORAD_ASSIGN_OR_RETURN(attention_biases["o_proj"],
                              fetch(p + "self_attn.o_proj.bias", {c.hidden_size}));
    }
    if (c.mlp_bias) {
      QLORAD_ASSIGN_OR_RETURN(mlp_biases["gate_proj"],
                              fetch(p + "mlp.gate_proj.bias", {c.intermediate_size}));
      QLORAD_ASSIGN_OR_RETURN(mlp_biases["up_proj"],
                              fetch(p + "mlp.up_proj.bias", {c.intermediate_size}));
      QLORAD_ASSIGN_OR_RETURN(mlp_biases["down_proj"],
                              fetch(p + "mlp.down_proj.bias", {c.hidden_size}));
    }
    layers.emplace_back(LlamaAttention(c, q, k, v, o, std::move(attention_biases)),
                        LlamaMlp(gate, up, down, std::move(mlp_biases)),
                        RMSNorm(in_norm, c.rms_norm_eps), RMSNorm(post_norm, c.rms_norm_eps));
  }
  QLORAD_ASSIGN_OR_RETURN(at::Tensor norm, fetch("model.norm.weight", {c.hidden_size}));
  at::Tensor lm_head = embed;
  if (!c.tie_word_embeddings) {
    QLORAD_ASSIGN_OR_RETURN(lm_head, fetch("lm_head.weight", {c.vocab_size, c.hidden_size}));
  }
  return LlamaModel(c, embed, std::move(layers), RMSNorm(norm, c.rms_norm_eps), lm_head);
}

}  // namespace qlorad::trainer
