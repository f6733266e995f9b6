#include "worker/trainer/io/json_file.h"

#include <fstream>

namespace qlorad::trainer {
namespace {

using nlohmann::json;

// nlohmann's parser keeps its own stack on the heap, so parsing any depth is safe; what recurses
// is using the value. A callback refuses containers past the limit while parsing, so no deep
// value is ever built (the parser still reads to the end, iteratively, to stay in sync).
template <typename Input>
StatusOr<json> ParseBounded(Input& input) {
  bool too_deep = false;
  const json::parser_callback_t refuse_deep = [&](int depth, json::parse_event_t event, json&) {
    const bool opens =
        event == json::parse_event_t::object_start || event == json::parse_event_t::array_start;
    if (opens && depth >= kMaxJsonDepth) too_deep = true;
    return !too_deep;
  };
  try {
    json value = json::parse(input, refuse_deep);
    if (too_deep) {
      return InvalidArgument("JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                             " levels");
    }
    return value;
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("not valid JSON: ") + e.what());
  }
}

}  // namespace

StatusOr<nlohmann::json> ParseJson(const std::string& text) {
  return ParseBounded(text);
}

StatusOr<nlohmann::json> ParseJson(std::istream& in) {
  return ParseBounded(in);
}

StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open");
  StatusOr<json> value = ParseJson(in);
  if (!value.ok()) return InvalidArgument(path + ": " + value.status().message());
  return value;
}

Status WriteJsonFile(const std::string& path, const nlohmann::json& value) {
  std::ofstream out(path, std::ios::trunc);
  out << value.dump(2) << "\n";
  out.close();
  if (!out) return Internal(path + ": write failed");
  return Status::Ok();
}

}  // namespace qlorad::trainer
