#include "worker/trainer/model/model_config.h"

#include <map>
#include <nlohmann/json.hpp>

#include "worker/trainer/io/file_util.h"
#include "worker/trainer/io/json_file.h"

namespace qlorad::trainer {

using nlohmann::json;

namespace {

// Upper bounds on what config.json may declare, checked as each field is read and so before
// anything is sized by it (`num_hidden_layers: 1000000000` once cost 8 GB and 17 s before the
// trainer failed). Each is far above every released Llama, Mistral and Qwen2 model (Llama 3.1
// 405B: hidden 16384, intermediate 53248, 126 layers, 128 heads; Qwen2: vocab 152064).
constexpr int64_t kMaxWidth = int64_t{1} << 16;         // hidden_size
constexpr int64_t kMaxIntermediate = int64_t{1} << 18;  // intermediate_size
constexpr int64_t kMaxLayers = 1024;                    // num_hidden_layers, max_window_layers
constexpr int64_t kMaxHeads = 1024;                     // heads and head_dim
constexpr int64_t kMaxVocab = int64_t{1} << 21;         // vocab_size
constexpr int64_t kMaxPositions = int64_t{1} << 24;     // positions and windows

// Reads a positive integer field, at most `max`; absent fields keep `*out` (the caller's default)
// unless required.
Status ReadPositive(const json& j, const std::string& source, const char* key, bool required,
                    int64_t max, int64_t* out) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) return InvalidArgument(source + ": " + key + ": missing");
    return Status::Ok();
  }
  if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0) {
    return InvalidArgument(source + ": " + key + ": must be a positive integer, got " +
                           j[key].dump());
  }
  if (j[key].get<int64_t>() > max) {
    return InvalidArgument(source + ": " + key + ": " + j[key].dump() +
                           " is more than the trainer takes (at most " + std::to_string(max) + ")");
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

// Reads the rotary block: `rope_parameters` (newer layout, which also holds rope_theta) or
// `rope_scaling` (older layout, theta at the top level).
Status ReadRope(const json& j, const std::string& source, LlamaConfig* c) {
  QLORAD_RETURN_IF_ERROR(ReadPositiveNumber(j, source, "rope_theta", &c->rope_theta));
  const char* field = j.contains("rope_parameters") && !j["rope_parameters"].is_null()
                          ? "rope_parameters"
                          : "rope_scaling";
  if (!j.contains(field) || j[field].is_null()) return Status::Ok();
  const json& rope = j[field];
  const std::string where = source + ": " + field;
  if (!rope.is_object()) return InvalidArgument(where + ": expected an object");
  QLORAD_RETURN_IF_ERROR(ReadPositiveNumber(rope, where, "rope_theta", &c->rope_theta));
  const json type_json = rope.value("rope_type", rope.value("type", json("default")));
  if (!type_json.is_string()) return InvalidArgument(where + ": rope_type: expected a string");
  RopeScaling& r = c->rope_scaling;
  r.type = type_json.get<std::string>();
  for (const json* holder : {&j, &rope}) {
    if (holder->contains("partial_rotary_factor") &&
        (*holder)["partial_rotary_factor"] != json(1.0)) {
      return InvalidArgument(source + ": partial_rotary_factor: only 1.0 is supported, got " +
                             (*holder)["partial_rotary_factor"].dump());
    }
  }
  if (r.type == "default") return Status::Ok();
  if (r.type != "linear" && r.type != "llama3") {
    return InvalidArgument(where + ": rope type '" + r.type +
                           "' is not supported (default, linear and llama3 are)");
  }
  r.factor = 0;
  QLORAD_RETURN_IF_ERROR(ReadPositiveNumber(rope, where, "factor", &r.factor));
  if (r.factor == 0) return InvalidArgument(where + ": factor: missing");
  if (r.type == "linear") return Status::Ok();
  // llama3: every parameter matters to the angles, so none is defaulted.
  r.low_freq_factor = r.high_freq_factor = 0;
  QLORAD_RETURN_IF_ERROR(ReadPositiveNumber(rope, where, "low_freq_factor", &r.low_freq_factor));
  QLORAD_RETURN_IF_ERROR(ReadPositiveNumber(rope, where, "high_freq_factor", &r.high_freq_factor));
  QLORAD_RETURN_IF_ERROR(ReadPositive(rope, where, "original_max_position_embeddings", true,
                                      kMaxPositions, &r.original_max_position_embeddings));
  if (r.low_freq_factor == 0 || r.high_freq_factor <= r.low_freq_factor) {
    return InvalidArgument(
        where + ": low_freq_factor and high_freq_factor: need 0 < low < high, got " +
        std::to_string(r.low_freq_factor) + " and " + std::to_string(r.high_freq_factor));
  }
  return Status::Ok();
}

Status ReadBool(const json& j, const std::string& source, const char* key, bool* out) {
  if (!j.contains(key) || j[key].is_null()) return Status::Ok();
  if (!j[key].is_boolean()) return InvalidArgument(source + ": " + key + ": must be true or false");
  *out = j[key].get<bool>();
  return Status::Ok();
}

// The window of sliding-attention layers (0 when the model never slides), and which layers
// slide: Mistral all of them; Qwen2 those its layer_types (or max_window_layers) name.
Status ReadSlidingWindows(const json& j, const std::string& source, LlamaConfig* c) {
  int64_t window = 0;
  QLORAD_RETURN_IF_ERROR(ReadPositive(j, source, "sliding_window", false, kMaxPositions, &window));
  c->sliding_windows.assign(c->num_hidden_layers, 0);
  if (c->model_type == "mistral") {
    c->sliding_windows.assign(c->num_hidden_layers, window);
    return Status::Ok();
  }
  if (c->model_type != "qwen2") return Status::Ok();
  bool use_sliding = false;
  QLORAD_RETURN_IF_ERROR(ReadBool(j, source, "use_sliding_window", &use_sliding));
  if (!use_sliding) return Status::Ok();  // HF ignores sliding_window then
  int64_t max_window_layers = c->num_hidden_layers;
  QLORAD_RETURN_IF_ERROR(
      ReadPositive(j, source, "max_window_layers", false, kMaxLayers, &max_window_layers));
  const bool listed = j.contains("layer_types") && !j["layer_types"].is_null();
  if (listed && (!j["layer_types"].is_array() ||
                 static_cast<int64_t>(j["layer_types"].size()) != c->num_hidden_layers)) {
    return InvalidArgument(source + ": layer_types: expected one entry per hidden layer");
  }
  for (int64_t i = 0; i < c->num_hidden_layers; ++i) {
    const bool slides =
        listed ? j["layer_types"][i] == "sliding_attention" : i >= max_window_layers;
    if (slides) c->sliding_windows[i] = window;
  }
  return Status::Ok();
}

}  // namespace

StatusOr<LlamaConfig> ParseLlamaConfig(const std::string& json_text, const std::string& source) {
  // Bounded depth: error messages print values, which recurses on how deep they nest.
  StatusOr<json> j = ParseJson(json_text);
  if (!j.ok()) return InvalidArgument(source + ": " + j.status().message());
  return LlamaConfigFromJson(*j, source);
}

StatusOr<LlamaConfig> LlamaConfigFromJson(const json& j, const std::string& source) {
  if (!j.is_object()) return InvalidArgument(source + ": expected a JSON object");
  LlamaConfig c;
  if (j.contains("model_type")) {
    const json& type = j["model_type"];
    if (type != "llama" && type != "mistral" && type != "qwen2") {
      return InvalidArgument(source + ": model_type: " + type.dump() +
                             " is not supported (llama, mistral and qwen2 are)");
    }
    c.model_type = type.get<std::string>();
  }
  if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
    return InvalidArgument(source + ": hidden_act: only 'silu' is supported, got " +
                           j["hidden_act"].dump());
  }
  QLORAD_RETURN_IF_ERROR(ReadPositive(j, source, "hidden_size", true, kMaxWidth, &c.hidden_size));
  QLORAD_RETURN_IF_ERROR(
      ReadPositive(j, source, "intermediate_size", true, kMaxIntermediate, &c.intermediate_size));
  QLORAD_RETURN_IF_ERROR(
      ReadPositive(j, source, "num_hidden_layers", true, kMaxLayers, &c.num_hidden_layers));
  QLORAD_RETURN_IF_ERROR(
      ReadPositive(j, source, "num_attention_heads", true, kMaxHeads, &c.num_attention_heads));
  QLORAD_RETURN_IF_ERROR(ReadPositive(j, source, "vocab_size", true, kMaxVocab, &c.vocab_size));
  c.num_key_value_heads = c.num_attention_heads;
  QLORAD_RETURN_IF_ERROR(
      ReadPositive(j, source, "num_key_value_heads", false, kMaxHeads, &c.num_key_value_heads));
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
  QLORAD_RETURN_IF_ERROR(ReadPositive(j, source, "head_dim", false, kMaxHeads, &c.head_dim));
  if (c.head_dim % 2 != 0) {
    return InvalidArgument(source + ": head_dim: must be even for rotary embeddings, got " +
                           std::to_string(c.head_dim));
  }
  QLORAD_RETURN_IF_ERROR(ReadPositive(j, source, "max_position_embeddings", false, kMaxPositions,
                                      &c.max_position_embeddings));
  QLORAD_RETURN_IF_ERROR(ReadPositiveNumber(j, source, "rms_norm_eps", &c.rms_norm_eps));
  QLORAD_RETURN_IF_ERROR(ReadRope(j, source, &c));
  QLORAD_RETURN_IF_ERROR(ReadBool(j, source, "tie_word_embeddings", &c.tie_word_embeddings));
  if (c.model_type == "qwen2") {
    c.qkv_bias = true;
  } else if (c.model_type == "llama") {
    bool attention_bias = false;
    QLORAD_RETURN_IF_ERROR(ReadBool(j, source, "attention_bias", &attention_bias));
    c.qkv_bias = c.o_bias = attention_bias;
    QLORAD_RETURN_IF_ERROR(ReadBool(j, source, "mlp_bias", &c.mlp_bias));
  }
  QLORAD_RETURN_IF_ERROR(ReadSlidingWindows(j, source, &c));
  for (const char* key : {"dtype", "torch_dtype"}) {  // the first one set, as transformers reads
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_string()) {
      return InvalidArgument(source + ": " + key + ": expected a string, got " + j[key].dump());
    }
    c.torch_dtype = j[key].get<std::string>();
    break;
  }
  return c;
}

StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  QLORAD_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  return ParseLlamaConfig(text, path);
}

std::string LlamaConfigJson(const LlamaConfig& c) {
  static const std::map<std::string, std::string> kArchitecture = {
      {"llama", "LlamaForCausalLM"},
      {"mistral", "MistralForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"}};
  json rope = {{"rope_type", c.rope_scaling.type}, {"rope_theta", c.rope_theta}};
  if (c.rope_scaling.type != "default") rope["factor"] = c.rope_scaling.factor;
  if (c.rope_scaling.type == "llama3") {
    rope["low_freq_factor"] = c.rope_scaling.low_freq_factor;
    rope["high_freq_factor"] = c.rope_scaling.high_freq_factor;
    rope["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
  }
  json j = {{"architectures", {kArchitecture.at(c.model_type)}},
            {"model_type", c.model_type},
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
            {"rope_parameters", rope},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"torch_dtype", c.torch_dtype},
            {"hidden_act", "silu"}};
  if (c.model_type == "llama") {
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  return j.dump(2) + "\n";
}

}  // namespace qlorad::trainer
