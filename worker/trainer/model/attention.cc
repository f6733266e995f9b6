#include "worker/trainer/model/attention.h"

#include <ATen/ops/_flash_attention_backward.h>
#include <ATen/ops/_flash_attention_forward.h>
#include <ATen/ops/_scaled_dot_product_cudnn_attention.h>
#include <ATen/ops/_scaled_dot_product_cudnn_attention_backward.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "worker/trainer/model/fused_layers.h"
#include "worker/trainer/model/recompute_keep.h"

#ifdef QLORAD_HAVE_NF4_OPS
#include "kernels/torch/rope_ops.h"
#endif

namespace qlorad::trainer {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Flash attention's window: query i sees keys i - left <= j <= i, so HF's i - window < j is
// left = window - 1; 0 means no window.
std::optional<int64_t> WindowLeft(int64_t window) {
  return window > 0 ? std::optional<int64_t>(window - 1) : std::nullopt;
}
std::optional<int64_t> WindowRight(int64_t window) {
  return window > 0 ? std::optional<int64_t>(0) : std::nullopt;
}

// [batch, seq, heads, d] -> [batch * seq, heads, d] for the variable-length kernels; a view for
// the projections' outputs (rows of one buffer), a copy otherwise.
at::Tensor Flatten(const at::Tensor& x) {
  return x.reshape({-1, x.size(2), x.size(3)});
}

// What an attention forward keeps for its backward besides q, k and v: the output [batch, seq,
// heads, d] (or [tokens, heads, d] with offsets), the log-sum-exp, and two RNG tensors (flash
// attention's rng_state and its unused slot, or cuDNN's philox seed and offset), plus which
// kernel made them.
struct FlashState {
  at::Tensor out, logsumexp, rng_state, unused;
  bool cudnn = false;
};

// cuDNN's fused attention ran attention forward+backward in about two thirds of flash attention
// 2's time on an H100 at Llama's shapes, through torch's SDPA (bench/results/2026-12-07-h100-
// attention-ab.txt). LibTorch reaches it for whole rows only (no document offsets) and without a
// sliding window, so packed rows and windows stay on flash attention. QLORAD_ATTENTION=flash keeps
// whole rows on flash attention too (for A/B runs and as a way out); a cuDNN that refuses the first
// call (an old library, an unsupported shape) is said once on stderr and not asked again.
// tests/gpu/test_train_cuda.py checks both kernels against transformers.
std::atomic<bool> cudnn_refused{false};

bool FlashForcedByEnvironment() {
  static const bool forced = [] {
    const char* choice = std::getenv("QLORAD_ATTENTION");
    return choice != nullptr && std::string(choice) == "flash";
  }();
  return forced;
}

bool UseCudnn(const at::Tensor& cu_seqlens, int64_t window) {
  if (cu_seqlens.defined() || window > 0 || cudnn_refused.load()) return false;
  return !FlashForcedByEnvironment();
}

// q [batch, seq, heads, d], k and v [batch, seq, kv_heads, d]; causal. LibTorch's op takes
// [batch, heads, seq, d] views and allocates its output in q's memory order, so the output read
// back as [batch, seq, heads, d] is contiguous (made so if a version did otherwise).
std::optional<FlashState> CudnnForward(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v) {
  try {
    auto [out, logsumexp, cum_q, cum_k, max_q, max_k, seed, offset, debug] =
        at::_scaled_dot_product_cudnn_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), /*attn_bias=*/std::nullopt,
            /*compute_log_sumexp=*/true, /*dropout_p=*/0.0, /*is_causal=*/true,
            /*return_debug_mask=*/false, /*scale=*/std::nullopt);
    return FlashState{out.transpose(1, 2).contiguous(), logsumexp, seed, offset, /*cudnn=*/true};
  } catch (const c10::Error& e) {
    if (!cudnn_refused.exchange(true)) {
      std::cerr << "attention: cuDNN refused (" << e.what_without_backtrace()
                << "); using flash attention from here on\n";
    }
    return std::nullopt;
  }
}

// q [batch, seq, heads, d], k and v [batch, seq, kv_heads, d]; causal, no dropout. The output is
// [batch * seq, heads, d] when cu_seqlens is given, else [batch, seq, heads, d].
FlashState FlashForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& cu_seqlens, int64_t window) {
  if (UseCudnn(cu_seqlens, window)) {
    if (std::optional<FlashState> state = CudnnForward(q, k, v)) return *std::move(state);
  }
  const bool varlen = cu_seqlens.defined();
  // An upper bound of the longest document is all the kernels need (it sizes their grids).
  const int64_t max_seqlen = q.size(1);
  std::optional<at::Tensor> cu;
  if (varlen) cu = cu_seqlens;
  auto [out, logsumexp, rng_state, unused, debug_mask] = at::_flash_attention_forward(
      varlen ? Flatten(q) : q, varlen ? Flatten(k) : k, varlen ? Flatten(v) : v, cu, cu, max_seqlen,
      max_seqlen, /*dropout_p=*/0.0, /*is_causal=*/true, /*return_debug_mask=*/false,
      /*scale=*/std::nullopt, WindowLeft(window), WindowRight(window));
  return {out, logsumexp, rng_state, unused};
}

// QLORAD_CHECK_KEPT=1: each recompute runs attention's forward anyway and checks that what the
// checkpointed forward kept holds its bits (tests/gpu/test_activation_checkpointing.py). A check,
// not a mode: it costs the forward that keeping saves.
bool CheckKeptAttention() {
  static const bool check = [] {
    const char* value = std::getenv("QLORAD_CHECK_KEPT");
    return value != nullptr && std::string(value) == "1";
  }();
  return check;
}

// FlashForward, or in a checkpointed layer's recompute the state its forward kept
// (recompute_keep.h): the same output and log-sum-exp without running attention again. In a
// checkpointed forward that keeps, the state is kept for that recompute.
FlashState ForwardOrKept(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& cu_seqlens, int64_t window) {
  RecomputeKeep* keep = CurrentRecomputeKeep(&KeptParts::attention);
  if (keep != nullptr && keep->replaying()) {
    const std::vector<at::Tensor> kept = keep->Next(5, "attention");
    TORCH_CHECK(kept[0].numel() == q.numel(), "attention: the kept output has ", kept[0].numel(),
                " elements, the recomputed queries ", q.numel());
    FlashState state{kept[0], kept[1], kept[2], kept[3], kept[4].item<bool>()};
    if (CheckKeptAttention()) {
      const FlashState fresh = FlashForward(q, k, v, cu_seqlens, window);
      TORCH_CHECK(fresh.out.equal(state.out) && fresh.logsumexp.equal(state.logsumexp),
                  "attention: the output or log-sum-exp kept for the recompute differs from the "
                  "recompute's own (QLORAD_CHECK_KEPT)");
    }
    return state;
  }
  FlashState state = FlashForward(q, k, v, cu_seqlens, window);
  if (keep != nullptr) {
    keep->Keep({state.out, state.logsumexp, state.rng_state, state.unused,
                at::scalar_tensor(state.cudnn, at::kBool)});
  }
  return state;
}

// dq, dk, dv, each [batch, seq, heads or kv_heads, d], by the kernel that ran the forward: cuDNN's
// in its own memory order (strided views; the caller copies them where it needs them, once).
std::array<at::Tensor, 3> FlashBackward(const at::Tensor& grad, const at::Tensor& q,
                                        const at::Tensor& k, const at::Tensor& v,
                                        const FlashState& state, const at::Tensor& cu_seqlens,
                                        int64_t window) {
  const bool varlen = cu_seqlens.defined();
  const int64_t max_seqlen = q.size(1);
  // The kernels read the gradient in the output's layout.
  const at::Tensor grad_out = grad.reshape(state.out.sizes()).contiguous();
  if (state.cudnn) {
    auto [dq, dk, dv] = at::_scaled_dot_product_cudnn_attention_backward(
        grad_out.transpose(1, 2), q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        state.out.transpose(1, 2), state.logsumexp, state.rng_state, state.unused,
        /*attn_bias=*/at::Tensor(), /*cum_seq_q=*/at::Tensor(), /*cum_seq_k=*/at::Tensor(),
        max_seqlen, max_seqlen, /*dropout_p=*/0.0, /*is_causal=*/true, /*scale=*/std::nullopt);
    return {dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)};
  }
  auto [dq, dk, dv] = at::_flash_attention_backward(
      grad_out, varlen ? Flatten(q) : q, varlen ? Flatten(k) : k, varlen ? Flatten(v) : v,
      state.out, state.logsumexp, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
      /*dropout_p=*/0.0, /*is_causal=*/true, state.rng_state, state.unused,
      /*scale=*/std::nullopt, WindowLeft(window), WindowRight(window));
  return {dq.view(q.sizes()), dk.view(k.sizes()), dv.view(v.sizes())};
}

void SaveFlash(AutogradContext* ctx, std::vector<at::Tensor> tensors, const FlashState& state,
               const at::Tensor& cu_seqlens, int64_t window) {
  tensors.insert(tensors.end(),
                 {state.out, state.logsumexp, state.rng_state, state.unused, cu_seqlens});
  ctx->save_for_backward(tensors);
  ctx->saved_data["window"] = window;
  ctx->saved_data["cudnn"] = state.cudnn;
}

// The state SaveFlash kept after the first `first` tensors, and cu_seqlens.
std::pair<FlashState, at::Tensor> LoadFlash(AutogradContext* ctx, const variable_list& saved,
                                            size_t first) {
  return {{saved[first], saved[first + 1], saved[first + 2], saved[first + 3],
           ctx->saved_data["cudnn"].toBool()},
          saved[first + 4]};
}

// Only the tensors that take a gradient are the Functions' Tensor inputs; cu_seqlens, positions
// and the rotary tables come through a pointer. torch::autograd::Function records the device of
// every Tensor input, and an undefined one (no cu_seqlens or positions for unpacked rows) fails
// there with "tensor does not have a device".

// Inputs: q, k, v; cu_seqlens undefined: every row one sequence.
struct FlashAttentionFunction : torch::autograd::Function<FlashAttentionFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor* cu_seqlens, int64_t window) {
    const FlashState state = ForwardOrKept(q, k, v, *cu_seqlens, window);
    SaveFlash(ctx, {q, k, v}, state, *cu_seqlens, window);
    return state.out.view(q.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const auto [state, cu_seqlens] = LoadFlash(ctx, s, 3);
    auto [dq, dk, dv] = FlashBackward(grads[0], s[0], s[1], s[2], state, cu_seqlens,
                                      ctx->saved_data["window"].toInt());
    return {dq.contiguous(), dk.contiguous(), dv.contiguous(), at::Tensor(), at::Tensor()};
  }
};

#ifdef QLORAD_HAVE_NF4_OPS
// q, k and v: views of the fused projection's output [batch, seq, heads + 2 kv_heads, d].
std::array<at::Tensor, 3> SplitHeads(const at::Tensor& qkv, int64_t heads, int64_t kv_heads,
                                     int64_t head_dim) {
  const at::Tensor all = qkv.view({qkv.size(0), qkv.size(1), heads + 2 * kv_heads, head_dim});
  return {all.narrow(2, 0, heads), all.narrow(2, heads, kv_heads),
          all.narrow(2, heads + kv_heads, kv_heads)};
}

// Inputs: qkv (rotated in place); the rotary tables, positions and cu_seqlens come in `inputs`.
struct RotaryAttentionFunction : torch::autograd::Function<RotaryAttentionFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& qkv,
                            const AttentionInputs* inputs) {
    auto [q, k, v] = SplitHeads(qkv, inputs->heads, inputs->kv_heads, inputs->head_dim);
    // In place: nothing else reads the projection's output (FusedProjection saves its input).
    ops::RopeInPlace(q, k, inputs->cos, inputs->sin, inputs->positions, /*inverse=*/false);
    const FlashState state = ForwardOrKept(q, k, v, inputs->cu_seqlens, inputs->window);
    SaveFlash(ctx, {qkv, inputs->cos, inputs->sin, inputs->positions}, state, inputs->cu_seqlens,
              inputs->window);
    ctx->saved_data["heads"] = inputs->heads;
    ctx->saved_data["kv_heads"] = inputs->kv_heads;
    ctx->saved_data["head_dim"] = inputs->head_dim;
    return state.out.view({qkv.size(0), qkv.size(1), inputs->heads * inputs->head_dim});
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor& qkv = s[0];
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const int64_t kv_heads = ctx->saved_data["kv_heads"].toInt();
    const int64_t head_dim = ctx->saved_data["head_dim"].toInt();
    auto [q, k, v] = SplitHeads(qkv, heads, kv_heads, head_dim);
    const auto [state, cu_seqlens] = LoadFlash(ctx, s, 4);
    const auto [dq, dk, dv] =
        FlashBackward(grads[0].reshape({qkv.size(0), qkv.size(1), heads, head_dim}), q, k, v, state,
                      cu_seqlens, ctx->saved_data["window"].toInt());
    // dq and dk rotated back (the rotation's backward is the inverse rotation) straight from the
    // memory order the kernel left them in into their heads of q|k|v's gradient, one pass each;
    // dv copied there. (A copy, then the inverse in place, cost 0.9 ms more of a 1B 4 x 2048 step
    // on an H100: bench/results/2026-12-07-h100-316de9d-trace-ckpt-off.txt.)
    // rope_into reads head_dim contiguously, as both kernels leave it (else one copy makes it so).
    const auto head_dim_contiguous = [](const at::Tensor& t) {
      return t.stride(3) == 1 ? t : t.contiguous();
    };
    at::Tensor dqkv = at::empty_like(qkv);
    auto [gq, gk, gv] = SplitHeads(dqkv, heads, kv_heads, head_dim);
    ops::RopeInto(head_dim_contiguous(dq), head_dim_contiguous(dk), s[1], s[2], s[3],
                  /*inverse=*/true, gq, gk);
    gv.copy_(dv);
    return {dqkv, at::Tensor()};
  }
};
#endif

}  // namespace

at::Tensor DocumentOffsets(const at::Tensor& positions) {
  at::Tensor starts = positions.eq(0);
  starts.select(1, 0).fill_(true);
  at::Tensor offsets = starts.flatten().nonzero().flatten();
  at::Tensor total = at::full({1}, positions.numel(), offsets.options());
  return at::cat({offsets, total}).to(at::kInt);
}

at::Tensor DocumentMask(const at::Tensor& positions, int64_t window) {
  const int64_t seq = positions.size(1);
  // A document starts where its position is 0; query i sees key j of its own document, j <= i.
  at::Tensor document = positions.eq(0).cumsum(1);
  at::Tensor causal = at::ones({seq, seq}, positions.options().dtype(at::kBool)).tril();
  at::Tensor mask = document.unsqueeze(2).eq(document.unsqueeze(1)).logical_and(causal);
  at::Tensor sliding = SlidingWindowMask(seq, window, positions.device());
  if (sliding.defined()) mask = mask.logical_and(sliding);
  return mask.unsqueeze(1);
}

at::Tensor SlidingWindowMask(int64_t seq, int64_t window, at::Device device) {
  if (window <= 0 || window >= seq) return at::Tensor();
  // Query i sees keys j with i - window < j <= i (HF's sliding_window_overlay on the causal mask).
  at::Tensor i = at::arange(seq, at::TensorOptions().dtype(at::kLong).device(device));
  at::Tensor j = i.unsqueeze(0);
  i = i.unsqueeze(1);
  return (j <= i).logical_and(j > i - window);
}

bool UsesFlashAttention(at::Device device, at::ScalarType dtype, int64_t head_dim) {
  // LibTorch's flash kernels: fp16/bf16, head sizes up to 256 in multiples of 8.
  return FusedPathsEnabled() && device.is_cuda() &&
         (dtype == at::kBFloat16 || dtype == at::kHalf) && head_dim % 8 == 0 && head_dim <= 256;
}

bool FusedRotaryAttentionAvailable(const at::Tensor& qkv, const AttentionInputs& inputs) {
  if (!UsesFlashAttention(qkv.device(), qkv.scalar_type(), inputs.head_dim)) return false;
#ifdef QLORAD_HAVE_NF4_OPS
  const auto op = c10::Dispatcher::singleton().findSchema({"qlorad::rope_", ""});
  return op && op->hasKernelForDispatchKey(c10::DispatchKey::CUDA);
#else
  return false;
#endif
}

at::Tensor FusedRotaryAttention(const at::Tensor& qkv, const AttentionInputs& inputs) {
#ifdef QLORAD_HAVE_NF4_OPS
  return RotaryAttentionFunction::apply(qkv, &inputs);
#else
  (void)qkv, (void)inputs;
  TORCH_CHECK(false, "FusedRotaryAttention needs the qlorad_ops library, which this build lacks");
#endif
}

at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& cu_seqlens, const at::Tensor& mask, int64_t window) {
  if (UsesFlashAttention(q.device(), q.scalar_type(), q.size(-1))) {
    return FlashAttentionFunction::apply(q, k, v, &cu_seqlens, window);
  }
  std::optional<at::Tensor> attention_mask;
  if (mask.defined()) attention_mask = mask;
  const at::Tensor out = at::scaled_dot_product_attention(
      q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attention_mask, /*dropout_p=*/0.0,
      /*is_causal=*/!attention_mask.has_value(), /*scale=*/std::nullopt,
      /*enable_gqa=*/k.size(2) != q.size(2));
  return out.transpose(1, 2);
}

}  // namespace qlorad::trainer
