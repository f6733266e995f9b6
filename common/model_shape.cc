#include "common/model_shape.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace qlorad {
namespace {

using json = nlohmann::json;

// config.json files nest a few levels; a deeper one is refused before anything recurses on it.
constexpr int kMaxDepth = 64;

Status ReadSize(const json& j, const std::string& source, const char* key, bool required,
                int64_t* out) {
  if (!j.contains(key) || j[key].is_null()) {
    return required ? InvalidArgument(source + ": " + key + ": missing") : Status::Ok();
  }
  if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0) {
    return InvalidArgument(source + ": " + key + ": expected a positive integer, got " +
                           j[key].dump());
  }
  *out = j[key].get<int64_t>();
  return Status::Ok();
}

}  // namespace

StatusOr<ModelShape> ParseModelShape(const std::string& json_text, const std::string& source) {
  json j;
  bool too_deep = false;
  const json::parser_callback_t limit_depth = [&too_deep](int depth, json::parse_event_t, json&) {
    if (depth > kMaxDepth) too_deep = true;
    return !too_deep;
  };
  try {
    j = json::parse(json_text, limit_depth);
  } catch (const json::exception& e) {
    return InvalidArgument(source + ": not valid JSON: " + e.what());
  }
  if (too_deep) return InvalidArgument(source + ": JSON nested too deep");
  if (!j.is_object()) return InvalidArgument(source + ": expected a JSON object");
  ModelShape s;
  QLORAD_RETURN_IF_ERROR(ReadSize(j, source, "hidden_size", true, &s.hidden_size));
  QLORAD_RETURN_IF_ERROR(ReadSize(j, source, "intermediate_size", true, &s.intermediate_size));
  QLORAD_RETURN_IF_ERROR(ReadSize(j, source, "num_hidden_layers", true, &s.num_hidden_layers));
  QLORAD_RETURN_IF_ERROR(ReadSize(j, source, "num_attention_heads", true, &s.num_attention_heads));
  QLORAD_RETURN_IF_ERROR(ReadSize(j, source, "vocab_size", true, &s.vocab_size));
  s.num_key_value_heads = s.num_attention_heads;
  QLORAD_RETURN_IF_ERROR(ReadSize(j, source, "num_key_value_heads", false, &s.num_key_value_heads));
  s.head_dim = s.hidden_size / s.num_attention_heads;
  QLORAD_RETURN_IF_ERROR(ReadSize(j, source, "head_dim", false, &s.head_dim));
  if (j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean()) {
    s.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  return s;
}

StatusOr<ModelShape> ReadModelShape(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return ParseModelShape(text.str(), path);
}

}  // namespace qlorad
