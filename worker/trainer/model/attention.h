// Causal self-attention over q, k, v in the layout the projections produce ([batch, seq, heads,
// head_dim], any batch and seq strides), for plain rows and for rows that pack several documents.
//
// On CUDA in fp16/bf16 it calls LibTorch's flash attention kernels directly: packed rows go in as
// variable-length sequences (cu_seqlens offsets into the flattened tokens), so a packed row costs
// what an unpacked one does and no [seq, seq] mask exists; grouped K/V heads are read as they are,
// never expanded; the output comes back [batch, seq, heads, head_dim], ready for o_proj without a
// transpose copy. Elsewhere (CPU, fp32) it is scaled_dot_product_attention with a dense mask.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace qlorad::trainer {

// Where the documents of a packed batch begin, for flash attention: int32 [documents + 1], the
// offset of each document's first token into the batch's tokens flattened row after row, then
// the token count. `positions` (int64 [batch, seq]) is each token's position in its document: a
// document begins where it is 0 and at the start of every row. Reads the starts back to the host
// once (their count sizes the result).
at::Tensor DocumentOffsets(const at::Tensor& positions);
// The same bounds as a dense mask for scaled_dot_product_attention: bool [batch, 1, seq, seq],
// query i sees key j of its own document with j <= i, and with `window` > 0 only j > i - window.
at::Tensor DocumentMask(const at::Tensor& positions, int64_t window);
// The mask of plain causal rows of `seq` tokens under a sliding `window` ([seq, seq] bool);
// undefined when the window is 0 or covers the row (is_causal alone says it then).
at::Tensor SlidingWindowMask(int64_t seq, int64_t window, at::Device device);

// Whether CausalAttention runs flash attention for q, k, v of this device, dtype and head size.
bool UsesFlashAttention(at::Device device, at::ScalarType dtype, int64_t head_dim);

// q [batch, seq, heads, d], k and v [batch, seq, kv_heads, d] (heads a multiple of kv_heads) ->
// [batch, seq, heads, d]. `cu_seqlens` (flash) or `mask` (otherwise), each optional, bound the
// documents; `window` > 0 lets query i see keys i - window < j <= i only (sliding window).
at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& cu_seqlens, const at::Tensor& mask, int64_t window);

// What attention needs besides q|k|v.
struct AttentionInputs {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  at::Tensor cos, sin;    // fp32 [table rows, head_dim] (RotaryCosSin)
  at::Tensor positions;   // int64 [batch, seq]: each token's table row; undefined: its column
  at::Tensor cu_seqlens;  // DocumentOffsets(positions), or undefined: every row one sequence
  int64_t window = 0;     // sliding window; 0: none
};
// Whether FusedRotaryAttention runs here: flash attention takes qkv's device, dtype and head
// size, and the operator library has the rotary kernel for that device.
bool FusedRotaryAttentionAvailable(const at::Tensor& qkv, const AttentionInputs& inputs);
// qkv [batch, seq, (heads + 2 kv_heads) * head_dim], the fused q|k|v projection's output, is
// consumed: q and k are rotated in place (kernels/torch/rope_ops.h), then flash attention reads
// them where they lie. -> [batch, seq, heads * head_dim]. Backward gives one q|k|v gradient.
at::Tensor FusedRotaryAttention(const at::Tensor& qkv, const AttentionInputs& inputs);

}  // namespace qlorad::trainer
