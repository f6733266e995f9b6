// The architecture of a Llama-family model, read from a Hugging Face config.json: Llama 2/3/3.x,
// Mistral and Qwen2 share one decoder graph and differ only in the fields below. Both config
// layouts are read: the older top-level rope_theta + rope_scaling and the newer rope_parameters.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

// Rotary frequency scaling (HF rope_type): default, linear (positions / factor) or llama3 (Llama
// 3.1+: long wavelengths / factor, short ones kept, a smooth blend between).
struct RopeScaling {
  std::string type = "default";
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

struct LlamaConfig {
  std::string model_type = "llama";  // llama | mistral | qwen2
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads (no GQA)
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; Llama with attention_bias
  bool o_bias = false;    // Llama with attention_bias
  bool mlp_bias = false;  // Llama with mlp_bias
  // Per layer: 0 attends to every earlier token, w > 0 only to the last w (Mistral's
  // sliding_window, Qwen2's sliding_attention layers). Empty means 0 for every layer.
  std::vector<int64_t> sliding_windows;
  // config.json's dtype (transformers 5 writes that) or torch_dtype (older files); as transformers
  // reads them, a non-null dtype wins. float32 when neither is set.
  std::string torch_dtype = "float32";
};

// `source` names the file in error messages ("/models/x/config.json: num_key_value_heads: ...").
StatusOr<LlamaConfig> ParseLlamaConfig(const std::string& json_text, const std::string& source);
// The same for config.json already parsed.
StatusOr<LlamaConfig> LlamaConfigFromJson(const nlohmann::json& config, const std::string& source);
StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& model_dir);
// The config.json text that ParseLlamaConfig reads back to `config`.
std::string LlamaConfigJson(const LlamaConfig& config);

}  // namespace qlorad::trainer
