#include "worker/trainer/model/tiny_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "common/portable_rng.h"
#include "worker/trainer/io/safetensors.h"
#include "worker/trainer/tokenizer/tokenizer.h"

namespace qlorad::trainer {

namespace fs = std::filesystem;

LlamaConfig TinyLlamaConfig() {
  LlamaConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 176;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = kByteVocabSize;
  c.max_position_embeddings = 2048;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = false;
  c.torch_dtype = "float32";
  return c;
}

namespace {

struct OwnedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Uniform in [-bound, bound]; double arithmetic on exact inputs rounds the same everywhere.
OwnedTensor Uniform(SplitMix64& rng, std::string name, std::vector<int64_t> shape, double bound) {
  OwnedTensor t{std::move(name), std::move(shape), {}};
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  t.values.resize(static_cast<size_t>(n));
  for (float& v : t.values) v = static_cast<float>((2.0 * rng.NextUnit() - 1.0) * bound);
  return t;
}

OwnedTensor Ones(std::string name, int64_t n) {
  return {std::move(name), {n}, std::vector<float>(static_cast<size_t>(n), 1.0f)};
}

}  // namespace

Status MakeTinyModel(const std::string& out_dir, uint64_t seed) {
  const LlamaConfig c = TinyLlamaConfig();
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return Internal(out_dir + ": cannot create directory: " + ec.message());

  SplitMix64 rng(seed);
  std::vector<OwnedTensor> weights;
  // Linear weights use PyTorch's default bound 1/sqrt(fan_in), so activations stay O(1).
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    weights.push_back(Uniform(rng, name, {out, in}, 1.0 / std::sqrt(static_cast<double>(in))));
  };
  weights.push_back(Uniform(rng, "model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, 1.0));
  const int64_t q_out = c.num_attention_heads * c.head_dim;
  const int64_t kv_out = c.num_key_value_heads * c.head_dim;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    linear(p + "self_attn.q_proj.weight", q_out, c.hidden_size);
    linear(p + "self_attn.k_proj.weight", kv_out, c.hidden_size);
    linear(p + "self_attn.v_proj.weight", kv_out, c.hidden_size);
    linear(p + "self_attn.o_proj.weight", c.hidden_size, q_out);
    linear(p + "mlp.gate_proj.weight", c.intermediate_size, c.hidden_size);
    linear(p + "mlp.up_proj.weight", c.intermediate_size, c.hidden_size);
    linear(p + "mlp.down_proj.weight", c.hidden_size, c.intermediate_size);
    weights.push_back(Ones(p + "input_layernorm.weight", c.hidden_size));
    weights.push_back(Ones(p + "post_attention_layernorm.weight", c.hidden_size));
  }
  weights.push_back(Ones("model.norm.weight", c.hidden_size));
  linear("lm_head.weight", c.vocab_size, c.hidden_size);

  std::vector<SafetensorsTensorToWrite> to_write;
  for (const auto& w : weights) to_write.push_back({w.name, "F32", w.shape, w.values.data()});
  QLORAD_RETURN_IF_ERROR(
      WriteSafetensors(out_dir + "/model.safetensors", to_write, {{"format", "pt"}}));

  const std::string config_path = out_dir + "/config.json";
  std::ofstream config(config_path, std::ios::trunc);
  config << LlamaConfigJson(c);
  config.close();
  if (!config) return Internal(config_path + ": write failed");
  return Status::Ok();
}

}  // namespace qlorad::trainer
