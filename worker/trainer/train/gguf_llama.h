// How a Hugging Face Llama-family checkpoint maps onto llama.cpp's GGUF layout, as llama.cpp's
// convert_hf_to_gguf.py does it (its LlamaModel for llama and mistral, Qwen2Model for qwen2).
// Torch-free: the export feeds it plain float rows.
//
// - Architecture: llama and mistral are llama.cpp's "llama", qwen2 its "qwen2".
// - Names: model.embed_tokens -> token_embd, model.layers.N.{input_layernorm, self_attn.q_proj,
// ...}
//   -> blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up,
//   ffn_down}, model.norm -> output_norm, lm_head -> output (absent when tied: llama.cpp then
//   reads the embedding). Biases keep their .bias suffix.
// - Rotary layout: HF's Llama checkpoints rotate the two halves of each head (rotate_half) while
//   llama.cpp's "llama" rope rotates adjacent pairs, so q_proj and k_proj rows (weights and
//   biases) are permuted per head: row i * 2 + j of the new head is row j * head_dim / 2 + i of
//   the old one (q over num_attention_heads, k over num_key_value_heads). qwen2 uses llama.cpp's
//   NEOX rope, which rotates halves as HF does: nothing is permuted.
// - Llama 3.1 rope scaling ("llama3") is not metadata: like the converter, the export writes a
//   rope_freqs.weight tensor of per-frequency divisors; linear scaling is
//   rope.scaling.type/factor.
// - Types (llama.cpp's rules, convert_hf_to_gguf's prepare_tensors): 1-D tensors (norms, biases,
//   rope_freqs), anything named *_norm.weight and anything not ending in .weight stay F32, since
//   ggml's kernels take those in F32 only; 2-D weights take the requested type (F16 or Q8_0), and a
//   Q8_0 weight whose rows are not whole 32-value blocks falls back to F16, as the converter does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/trainer/io/gguf_writer.h"
#include "worker/trainer/model/model_config.h"
#include "worker/trainer/tokenizer/gguf_vocab.h"

namespace qlorad::trainer {

// llama.cpp's llama_ftype values for general.file_type.
constexpr uint32_t kGgufFileTypeF16 = 1;
constexpr uint32_t kGgufFileTypeQ8_0 = 7;

// "llama" or "qwen2"; `source` (config.json's path) names the field in errors.
StatusOr<std::string> GgufArchitecture(const LlamaConfig& config, const std::string& source);

// The GGUF name of a Hugging Face tensor name; an error names one with no counterpart.
StatusOr<std::string> GgufTensorName(const std::string& hf_name);

// The heads `hf_name`'s rows are permuted over for `arch` (see above); 0: not permuted.
int64_t RotaryPermutationHeads(const LlamaConfig& config, const std::string& arch,
                               const std::string& hf_name);

// `rows` x `cols` row-major floats from `in` to `out` (not aliased), rows permuted per head.
Status PermuteRotaryRows(const float* in, float* out, int64_t rows, int64_t cols, int64_t heads);

// The type a tensor is written in when `requested` (F16 or Q8_0) is asked for.
GgmlType GgufTensorType(const std::string& gguf_name, const std::vector<int64_t>& shape,
                        GgmlType requested);

// Llama 3.1's per-frequency rope divisors (head_dim / 2 of them), empty unless rope type llama3.
std::vector<float> Llama3RopeFactors(const LlamaConfig& config);

// general.*, <arch>.* and tokenizer.* metadata.
void AddGgufMetadata(const LlamaConfig& config, const std::string& arch, const std::string& name,
                     uint32_t file_type, const GgufVocab& vocab, GgufWriter* writer);

}  // namespace qlorad::trainer
