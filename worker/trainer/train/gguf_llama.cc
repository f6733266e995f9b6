#include "worker/trainer/train/gguf_llama.h"

#include <cmath>
#include <cstring>
#include <numbers>
#include <regex>

namespace qlorad::trainer {

namespace {

bool EndsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Hugging Face module path inside a decoder layer -> llama.cpp's block tensor name.
constexpr std::pair<const char*, const char*> kLayerNames[] = {
    {"input_layernorm", "attn_norm"},    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},      {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
    {"mlp.gate_proj", "ffn_gate"},       {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
};

}  // namespace

StatusOr<std::string> GgufArchitecture(const LlamaConfig& config, const std::string& source) {
  if (config.model_type == "llama" || config.model_type == "mistral") return std::string("llama");
  if (config.model_type == "qwen2") {
    if (config.rope_scaling.type == "llama3") {
      return InvalidArgument(source +
                             ": rope_scaling: llama3 scaling on a qwen2 model has no "
                             "GGUF form llama.cpp reads");
    }
    return std::string("qwen2");
  }
  return InvalidArgument(source + ": model_type: '" + config.model_type +
                         "' has no GGUF export (llama, mistral and qwen2 have)");
}

StatusOr<std::string> GgufTensorName(const std::string& hf_name) {
  if (hf_name == "model.embed_tokens.weight") return std::string("token_embd.weight");
  if (hf_name == "model.norm.weight") return std::string("output_norm.weight");
  if (hf_name == "lm_head.weight") return std::string("output.weight");
  static const std::regex kLayer(R"(model\.layers\.(\d+)\.(.+)\.(weight|bias))");
  std::smatch m;
  if (std::regex_match(hf_name, m, kLayer)) {
    for (const auto& [hf, gguf] : kLayerNames) {
      if (m[2] == hf) return "blk." + m[1].str() + "." + gguf + "." + m[3].str();
    }
  }
  return InvalidArgument("tensor '" + hf_name + "' has no GGUF name in llama.cpp's layout");
}

int64_t RotaryPermutationHeads(const LlamaConfig& config, const std::string& arch,
                               const std::string& hf_name) {
  if (arch != "llama") return 0;
  for (const char* suffix : {".q_proj.weight", ".q_proj.bias"}) {
    if (EndsWith(hf_name, suffix)) return config.num_attention_heads;
  }
  for (const char* suffix : {".k_proj.weight", ".k_proj.bias"}) {
    if (EndsWith(hf_name, suffix)) return config.num_key_value_heads;
  }
  return 0;
}

Status PermuteRotaryRows(const float* in, float* out, int64_t rows, int64_t cols, int64_t heads) {
  if (heads <= 0 || rows % (2 * heads) != 0) {
    return InvalidArgument("rotary permutation: " + std::to_string(rows) +
                           " rows are not an even head_dim for each of " + std::to_string(heads) +
                           " heads");
  }
  const int64_t head_dim = rows / heads;
  const int64_t half = head_dim / 2;
  const size_t row_bytes = static_cast<size_t>(cols) * sizeof(float);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t to = h * head_dim + i * 2 + j;
        const int64_t from = h * head_dim + j * half + i;
        std::memcpy(out + to * cols, in + from * cols, row_bytes);
      }
    }
  }
  return Status::Ok();
}

GgmlType GgufTensorType(const std::string& gguf_name, const std::vector<int64_t>& shape,
                        GgmlType requested) {
  if (shape.size() <= 1 || EndsWith(gguf_name, "_norm.weight") || !EndsWith(gguf_name, ".weight")) {
    return GgmlType::kF32;
  }
  if (requested == GgmlType::kQ8_0 && shape.back() % 32 != 0) return GgmlType::kF16;
  return requested;
}

std::vector<float> Llama3RopeFactors(const LlamaConfig& config) {
  const RopeScaling& s = config.rope_scaling;
  if (s.type != "llama3") return {};
  // The converter's arithmetic: frequencies in fp32 (torch), the band tests in double (Python).
  const double old_context = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / s.low_freq_factor;
  const double high_freq_wavelen = old_context / s.high_freq_factor;
  std::vector<float> factors;
  for (int64_t i = 0; i < config.head_dim; i += 2) {
    const float exponent = static_cast<float>(i) / static_cast<float>(config.head_dim);
    const float freq = 1.0f / std::pow(static_cast<float>(config.rope_theta), exponent);
    const double wavelen = 2 * std::numbers::pi / static_cast<double>(freq);
    double factor;
    if (wavelen < high_freq_wavelen) {
      factor = 1.0;
    } else if (wavelen > low_freq_wavelen) {
      factor = s.factor;
    } else {
      const double smooth =
          (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      factor = 1.0 / ((1.0 - smooth) / s.factor + smooth);
    }
    factors.push_back(static_cast<float>(factor));
  }
  return factors;
}

void AddGgufMetadata(const LlamaConfig& config, const std::string& arch, const std::string& name,
                     uint32_t file_type, const GgufVocab& vocab, GgufWriter* writer) {
  GgufWriter& w = *writer;
  const auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  w.AddString("general.architecture", arch);
  w.AddString("general.type", "model");
  w.AddString("general.name", name);
  w.AddUint32("general.file_type", file_type);
  w.AddUint32("general.quantization_version", 2);  // ggml's GGML_QNT_VERSION

  const std::string a = arch + ".";
  w.AddUint32(a + "vocab_size", u32(config.vocab_size));
  w.AddUint32(a + "context_length", u32(config.max_position_embeddings));
  w.AddUint32(a + "embedding_length", u32(config.hidden_size));
  w.AddUint32(a + "block_count", u32(config.num_hidden_layers));
  w.AddUint32(a + "feed_forward_length", u32(config.intermediate_size));
  w.AddUint32(a + "attention.head_count", u32(config.num_attention_heads));
  w.AddUint32(a + "attention.head_count_kv", u32(config.num_key_value_heads));
  // Written even when head_dim is hidden_size / heads, where they are what llama.cpp assumes.
  w.AddUint32(a + "attention.key_length", u32(config.head_dim));
  w.AddUint32(a + "attention.value_length", u32(config.head_dim));
  w.AddUint32(a + "rope.dimension_count", u32(config.head_dim));
  w.AddFloat32(a + "rope.freq_base", static_cast<float>(config.rope_theta));
  w.AddFloat32(a + "attention.layer_norm_rms_epsilon", static_cast<float>(config.rms_norm_eps));
  if (config.rope_scaling.type == "linear") {
    w.AddString(a + "rope.scaling.type", "linear");
    w.AddFloat32(a + "rope.scaling.factor", static_cast<float>(config.rope_scaling.factor));
  }

  w.AddString("tokenizer.ggml.model", vocab.model);
  w.AddString("tokenizer.ggml.pre", vocab.pre);
  w.AddStringArray("tokenizer.ggml.tokens", vocab.tokens);
  w.AddInt32Array("tokenizer.ggml.token_type", vocab.token_types);
  w.AddStringArray("tokenizer.ggml.merges", vocab.merges);
  if (vocab.bos_id) w.AddUint32("tokenizer.ggml.bos_token_id", *vocab.bos_id);
  if (vocab.eos_id) w.AddUint32("tokenizer.ggml.eos_token_id", *vocab.eos_id);
  if (vocab.unk_id) w.AddUint32("tokenizer.ggml.unknown_token_id", *vocab.unk_id);
  if (vocab.pad_id) w.AddUint32("tokenizer.ggml.padding_token_id", *vocab.pad_id);
  if (vocab.add_bos) w.AddBool("tokenizer.ggml.add_bos_token", *vocab.add_bos);
  if (vocab.add_eos) w.AddBool("tokenizer.ggml.add_eos_token", *vocab.add_eos);
  if (vocab.chat_template) w.AddString("tokenizer.chat_template", *vocab.chat_template);
}

}  // namespace qlorad::trainer
