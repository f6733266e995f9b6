#include "worker/trainer/model_config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace qlorad::trainer {

using nlohmann::json;

namespace {

// Reads a positive integer field; absent fields keep `*out` (the caller's default) unless required.
Status ReadPositive(const json& j, const std::string& source, const char* key, bool required,
                    int64_t* out) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) return InvalidArgument(source + ": " + key + ": missing");
    return Status::Ok();
  }
  if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0) {
    return InvalidArgument(source + ": " + key + ": must be a positive integer, got " +
                           j[key].dump());
  }
  *out = j[key].get<int64_t>();
  return Status::Ok();
}

Status ReadPositiveNumber(const json& j, const std::string& source, const char* key, double* out) {
  if (!j.contains(key) || j[key].is_null()) return Status::Ok();
  if (!j[key].is_number() || j[key].get<double>() <= 0) {
    return InvalidArgument(source + ": " + key + ": must be a positive number, got " +
                           j[key].dump());
  }
  *out = j[key].get<double>();
  return Status::Ok();
}

}  // namespace

StatusOr<LlamaConfig> ParseLlamaConfig(const std::string& json_text, const std::string& source) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    return InvalidArgument(source + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) return InvalidArgument(source + ": expected a JSON object");
  if (j.contains("model_type") && j["model_type"] != "llama") {
    return InvalidArgument(source + ": model_type: only 'llama' is supported, got " +
                           j["model_type"].dump());
  }
  LlamaConfig c;
  QLORAD_RETURN_IF_ERROR(ReadPositive(j, source, "hidden_size", true, &c.hidden_size));
  QLORAD_RETURN_IF_ERROR(ReadPositive(j, source, "intermediate_size", true, &c.intermediate_size));
  QLORAD_RETURN_IF_ERROR(ReadPositive(j, source, "num_hidden_layers", true, &c.num_hidden_layers));
  QLORAD_RETURN_IF_ERROR(
      ReadPositive(j, source, "num_attention_heads", true, &c.num_attention_heads));
  QLORAD_RETURN_IF_ERROR(ReadPositive(j, source, "vocab_size", true, &c.vocab_size));
  c.num_key_value_heads = c.num_attention_heads;
  QLORAD_RETURN_IF_ERROR(
      ReadPositive(j, source, "num_key_value_heads", false, &c.num_key_value_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return InvalidArgument(
        source + ": num_key_value_heads: " + std::to_string(c.num_key_value_heads) +
        " does not divide num_attention_heads " + std::to_string(c.num_attention_heads));
  }
  if (c.hidden_size % c.num_attention_heads != 0 && !j.contains("head_dim")) {
    return InvalidArgument(source +
                           ": head_dim: missing and hidden_size is not a multiple of "
                           "num_attention_heads");
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  QLORAD_RETURN_IF_ERROR(ReadPositive(j, source, "head_dim", false, &c.head_dim));
  if (c.head_dim % 2 != 0) {
    return InvalidArgument(source + ": head_dim: must be even for rotary embeddings, got " +
                           std::to_string(c.head_dim));
  }
  QLORAD_RETURN_IF_ERROR(
      ReadPositive(j, source, "max_position_embeddings", false, &c.max_position_embeddings));
  QLORAD_RETURN_IF_ERROR(ReadPositiveNumber(j, source, "rms_norm_eps", &c.rms_norm_eps));
  QLORAD_RETURN_IF_ERROR(ReadPositiveNumber(j, source, "rope_theta", &c.rope_theta));
  if (j.contains("tie_word_embeddings")) {
    if (!j["tie_word_embeddings"].is_boolean()) {
      return InvalidArgument(source + ": tie_word_embeddings: must be true or false");
    }
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    // Llama 3.1+ frequency scaling changes every rotary angle; training without it would silently
    // fine-tune a different model, so refuse until it is implemented.
    const json& rs = j["rope_scaling"];
    const std::string type =
        rs.is_object() ? rs.value("rope_type", rs.value("type", std::string("?"))) : "?";
    if (type != "default") {
      return InvalidArgument(source + ": rope_scaling: rope type '" + type +
                             "' is not supported yet (only default rotary embeddings)");
    }
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) {
    c.torch_dtype = j["torch_dtype"].get<std::string>();
  }
  return c;
}

StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  return ParseLlamaConfig(text.str(), path);
}

std::string LlamaConfigJson(const LlamaConfig& c) {
  json j = {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_hidden_layers", c.num_hidden_layers},
            {"num_attention_heads", c.num_attention_heads},
            {"num_key_value_heads", c.num_key_value_heads},
            {"head_dim", c.head_dim},
            {"vocab_size", c.vocab_size},
            {"max_position_embeddings", c.max_position_embeddings},
            {"rms_norm_eps", c.rms_norm_eps},
            {"rope_theta", c.rope_theta},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"torch_dtype", c.torch_dtype},
            {"hidden_act", "silu"},
            {"attention_bias", false},
            {"mlp_bias", false}};
  return j.dump(2) + "\n";
}

}  // namespace qlorad::trainer
