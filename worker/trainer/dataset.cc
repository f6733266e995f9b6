#include "worker/trainer/dataset.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "worker/trainer/tokenizer.h"

namespace qlorad::trainer {

using nlohmann::json;

namespace {

StatusOr<std::vector<int64_t>> ReadIds(const json& value, const char* key, int64_t vocab_size,
                                       bool allow_ignore) {
  if (!value.is_array()) return InvalidArgument(std::string(key) + " must be an array of integers");
  std::vector<int64_t> ids;
  ids.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    const json& v = value[i];
    if (!v.is_number_integer()) {
      return InvalidArgument(std::string(key) + "[" + std::to_string(i) + "] is not an integer");
    }
    const auto id = v.get<int64_t>();
    const bool ignored = allow_ignore && id == kIgnoreLabel;
    if (!ignored && (id < 0 || id >= vocab_size)) {
      return InvalidArgument(std::string(key) + "[" + std::to_string(i) +
                             "] = " + std::to_string(id) + " is outside the vocabulary [0, " +
                             std::to_string(vocab_size) + ")");
    }
    ids.push_back(id);
  }
  return ids;
}

// Parses one non-blank line; errors say what is wrong, the caller adds file and line.
StatusOr<Document> ParseLine(const std::string& line, const std::string& format,
                             int64_t vocab_size) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return InvalidArgument("expected a JSON object");
  Document doc;
  const bool has_ids = j.contains("input_ids");
  const bool has_text = j.contains("text");
  if (has_ids && (format == "auto" || format == "input_ids")) {
    QLORAD_ASSIGN_OR_RETURN(doc.input_ids, ReadIds(j["input_ids"], "input_ids", vocab_size, false));
    if (j.contains("labels")) {
      QLORAD_ASSIGN_OR_RETURN(doc.labels, ReadIds(j["labels"], "labels", vocab_size, true));
      if (doc.labels.size() != doc.input_ids.size()) {
        return InvalidArgument("labels has " + std::to_string(doc.labels.size()) +
                               " entries but input_ids has " +
                               std::to_string(doc.input_ids.size()));
      }
    } else {
      doc.labels = doc.input_ids;
    }
  } else if (has_text && (format == "auto" || format == "text")) {
    if (!j["text"].is_string()) return InvalidArgument("text must be a string");
    doc.input_ids = ByteTokenize(j["text"].get<std::string>());
    for (int64_t id : doc.input_ids) {
      if (id >= vocab_size) {
        return InvalidArgument("the byte tokenizer needs a vocabulary of at least " +
                               std::to_string(kByteVocabSize) + " ids, the model has " +
                               std::to_string(vocab_size));
      }
    }
    doc.labels = doc.input_ids;
  } else {
    return InvalidArgument(format == "auto" ? "expected an \"input_ids\" or a \"text\" key"
                                            : "expected a \"" + format + "\" key");
  }
  if (doc.input_ids.empty()) return InvalidArgument("input_ids is empty");
  return doc;
}

}  // namespace

StatusOr<Dataset> LoadJsonlDataset(const DataSpec& spec, int64_t vocab_size) {
  if (spec.format != "auto" && spec.format != "text" && spec.format != "input_ids") {
    return InvalidArgument("data.format: '" + spec.format +
                           "' is not supported by the trainer yet (auto, text, input_ids)");
  }
  std::ifstream in(spec.path);
  if (!in) return NotFound("data.path: cannot open " + spec.path);
  Dataset dataset;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    StatusOr<Document> doc = ParseLine(line, spec.format, vocab_size);
    if (!doc.ok()) {
      if (spec.skip_bad_lines) {
        ++dataset.skipped_lines;
        continue;
      }
      return InvalidArgument(spec.path + ":" + std::to_string(line_no) + ": " +
                             doc.status().message());
    }
    dataset.documents.push_back(std::move(doc).value());
  }
  if (in.bad()) return Internal(spec.path + ": read error");
  if (dataset.documents.empty()) {
    return InvalidArgument(
        "data.path: " + spec.path + " has no usable examples" +
        (dataset.skipped_lines > 0
             ? " (" + std::to_string(dataset.skipped_lines) + " bad lines skipped)"
             : std::string()));
  }
  return dataset;
}

}  // namespace qlorad::trainer
