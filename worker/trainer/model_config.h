// The architecture of a Llama-family model, read from a Hugging Face config.json.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace qlorad::trainer {

struct LlamaConfig {
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
  bool tie_word_embeddings = false;
  std::string torch_dtype = "float32";
};

// `source` names the file in error messages ("/models/x/config.json: num_key_value_heads: ...").
StatusOr<LlamaConfig> ParseLlamaConfig(const std::string& json_text, const std::string& source);
StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& model_dir);
// The config.json text that ParseLlamaConfig reads back to `config`.
std::string LlamaConfigJson(const LlamaConfig& config);

}  // namespace qlorad::trainer
