#include "worker/trainer/data/dataset.h"

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>

#include "worker/trainer/data/chat_template.h"
#include "worker/trainer/data/class_labels.h"
#include "worker/trainer/data/data_formats.h"
#include "worker/trainer/io/json_file.h"

namespace qlorad::trainer {

using nlohmann::json;

namespace {

std::string Range(int64_t vocab_size) {
  return "[0, " + std::to_string(vocab_size) + ")";
}

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
                             "] = " + std::to_string(id) + " is outside the vocabulary " +
                             Range(vocab_size));
    }
    ids.push_back(id);
  }
  return ids;
}

StatusOr<Document> IdsDocument(const json& record, int64_t vocab_size) {
  if (!record.is_object()) return InvalidArgument("expected a JSON object");
  if (!record.contains("input_ids")) return InvalidArgument("input_ids: missing");
  Document doc;
  QLORAD_ASSIGN_OR_RETURN(doc.input_ids,
                          ReadIds(record["input_ids"], "input_ids", vocab_size, false));
  if (record.contains("labels")) {
    QLORAD_ASSIGN_OR_RETURN(doc.labels, ReadIds(record["labels"], "labels", vocab_size, true));
    if (doc.labels.size() != doc.input_ids.size()) {
      return InvalidArgument("labels has " + std::to_string(doc.labels.size()) +
                             " entries but input_ids has " + std::to_string(doc.input_ids.size()));
    }
  } else {
    doc.labels = doc.input_ids;
  }
  if (doc.input_ids.empty()) return InvalidArgument("input_ids is empty");
  return doc;
}

// Encodes the whole text at once, so the ids are exactly the tokenizer's (Hugging Face encodes
// the rendered chat in one piece too). Where a trained stretch starts or ends is found by
// encoding the rest of the text from there: the ids at the end that this encoding reproduces
// belong to the rest. A token that spans the boundary goes to the part where it starts.
// (SharedSuffix answers that from the whole text's encoding, re-encoding only up to the next
// special token, so the cost does not grow with the square of the number of turns.)
StatusOr<Document> TextDocument(const RecordText& record, const ModelTokenizer& tokenizer,
                                bool completions_only, const DatasetOptions& options) {
  std::string text;
  for (const TextSegment& s : record.segments) text += s.text;
  Document doc;
  QLORAD_ASSIGN_OR_RETURN(const ModelTokenizer::Encoding whole,
                          tokenizer.EncodeForSuffixes(text, record.add_special));
  doc.input_ids = whole.ids;
  doc.labels.assign(doc.input_ids.size(), kIgnoreLabel);
  size_t token = 0, offset = 0;
  for (size_t i = 0; i < record.segments.size(); ++i) {
    const TextSegment& segment = record.segments[i];
    offset += segment.text.size();
    size_t end = doc.input_ids.size();
    const bool last = i + 1 == record.segments.size();
    if (!last && segment.trained == record.segments[i + 1].trained) continue;  // one stretch
    if (!last) {
      QLORAD_ASSIGN_OR_RETURN(const size_t shared,
                              tokenizer.SharedSuffix(text, offset, whole, record.add_special));
      end = std::max(token, doc.input_ids.size() - shared);
    }
    if (segment.trained || !completions_only) {
      std::copy(doc.input_ids.begin() + static_cast<std::ptrdiff_t>(token),
                doc.input_ids.begin() + static_cast<std::ptrdiff_t>(end),
                doc.labels.begin() + static_cast<std::ptrdiff_t>(token));
    }
    token = end;
  }
  const std::optional<int64_t> eos = tokenizer.eos_id();
  if (record.append_eos && eos && (doc.input_ids.empty() || doc.input_ids.back() != *eos)) {
    doc.input_ids.push_back(*eos);
    doc.labels.push_back(*eos);
  }
  if (doc.input_ids.empty()) return InvalidArgument("the text is empty");
  if (std::all_of(doc.labels.begin(), doc.labels.end(),
                  [](int64_t l) { return l == kIgnoreLabel; })) {
    return InvalidArgument(
        "nothing to train on: no completion or assistant turn (data.train_on_completions_only)");
  }
  for (int64_t id : doc.input_ids) {
    if (id >= options.vocab_size) {
      return InvalidArgument("token id " + std::to_string(id) +
                             " is outside the model's vocabulary " + Range(options.vocab_size) +
                             ": the tokenizer does not belong to this model");
    }
  }
  if (options.keep_text) doc.text = std::move(text);
  return doc;
}

// The tokenizer's special tokens, or the family's usual ones when it names none (the byte-level
// demo tokenizer).
StatusOr<ChatTemplate> ResolveChatTemplate(const DataSpec& spec, const ModelTokenizer& tokenizer) {
  ChatTemplate chat;
  const std::string& jinja = tokenizer.chat_template();
  const StatusOr<ChatFamily> model_family = ChatFamilyOfTemplate(jinja);
  if (spec.chat_template == "auto") {
    if (jinja.empty()) {
      return InvalidArgument(
          "data.chat_template: auto, but model.path has no chat template (tokenizer_config.json "
          "chat_template or chat_template.jinja); name one: llama3, llama3.1, chatml, mistral, "
          "mistral-v0.2, mistral-v0.3, llama2");
    }
    QLORAD_ASSIGN_OR_RETURN(chat.family, model_family);
  } else {
    QLORAD_ASSIGN_OR_RETURN(chat.family, ChatFamilyByName(spec.chat_template));
  }
  const bool model_template_is_this_family = model_family.ok() && *model_family == chat.family;
  if (model_template_is_this_family) QLORAD_RETURN_IF_ERROR(ReadTemplateDefaults(jinja, chat));
  chat.bos_token =
      !tokenizer.bos_token().empty() ? tokenizer.bos_token() : FallbackBosToken(chat.family);
  chat.eos_token =
      !tokenizer.eos_token().empty() ? tokenizer.eos_token() : FallbackEosToken(chat.family);
  return chat;
}

}  // namespace

Status ForEachRecord(const std::string& path, const std::string& field, const RecordFn& each) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(field + ": cannot open " + path);
  in >> std::ws;
  if (in.peek() == '[') {  // a JSON array of records
    StatusOr<json> parsed = ParseJson(in);
    if (!parsed.ok()) return InvalidArgument(path + ": " + parsed.status().message());
    const json& all = *parsed;
    for (size_t i = 0; i < all.size(); ++i) {
      QLORAD_RETURN_IF_ERROR(each(path + ": record " + std::to_string(i + 1), all[i]));
    }
    return Status();
  }
  std::string line;
  int64_t line_no = 0;
  in.seekg(0);
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    // Bounded depth: a record is copied and printed, which recurses on how deep it nests.
    QLORAD_RETURN_IF_ERROR(each(path + ":" + std::to_string(line_no), ParseJson(line)));
  }
  if (in.bad()) return Internal(path + ": read error");
  return Status();
}

namespace {

// Turns records into documents, settling the format on the first record and loading the
// tokenizer only when text needs it.
class Loader {
 public:
  Loader(const DataSpec& spec, const std::string& model_dir, const DatasetOptions& options)
      : spec_(spec), model_dir_(model_dir), options_(options) {}

  // A fatal problem with the setup (format, tokenizer, template) is returned as such; a problem
  // with this one record comes back inside the inner StatusOr.
  StatusOr<StatusOr<Document>> Convert(const json& record) {
    if (!format_) {
      if (spec_.format == "auto") {
        QLORAD_ASSIGN_OR_RETURN(format_, DetectDataFormat(record));
      } else {
        QLORAD_ASSIGN_OR_RETURN(format_, DataFormatByName(spec_.format));
      }
    }
    StatusOr<StatusOr<Document>> doc = ConvertTokens(record);
    if (options_.classes == nullptr || !doc.ok() || !doc->ok()) return doc;
    return ClassifiedExample(std::move(doc->value()), record, *options_.classes);
  }

 private:
  StatusOr<StatusOr<Document>> ConvertTokens(const json& record) {
    if (*format_ == DataFormat::kInputIds) return IdsDocument(record, options_.vocab_size);
    if (!tokenizer_) {
      QLORAD_ASSIGN_OR_RETURN(tokenizer_, ModelTokenizer::ForModelDir(model_dir_));
    }
    if (IsChatFormat(*format_) && !chat_) {
      QLORAD_ASSIGN_OR_RETURN(chat_, ResolveChatTemplate(spec_, *tokenizer_));
    }
    StatusOr<RecordText> text = RecordToText(record, *format_, chat_ ? &*chat_ : nullptr);
    if (!text.ok()) return StatusOr<Document>(text.status());
    // A classified example ends where its text does, as the tokenizer encodes it (no EOS).
    if (options_.classes != nullptr) text->append_eos = false;
    return TextDocument(*text, *tokenizer_, spec_.train_on_completions_only, options_);
  }

  const DataSpec& spec_;
  const std::string& model_dir_;
  const DatasetOptions& options_;
  std::optional<DataFormat> format_;
  std::optional<ModelTokenizer> tokenizer_;
  std::optional<ChatTemplate> chat_;
};

}  // namespace

StatusOr<Dataset> LoadDataset(const DataSpec& spec, const std::string& model_dir,
                              const DatasetOptions& options) {
  if (spec.format != "auto") QLORAD_RETURN_IF_ERROR(DataFormatByName(spec.format).status());
  if (spec.chat_template != "auto") {
    QLORAD_RETURN_IF_ERROR(ChatFamilyByName(spec.chat_template).status());
  }
  Loader loader(spec, model_dir, options);
  Dataset dataset;
  auto skip_or_fail = [&](const std::string& where, const Status& why) -> Status {
    if (!spec.skip_bad_lines) return InvalidArgument(where + ": " + why.message());
    ++dataset.skipped_lines;
    return Status();
  };
  QLORAD_RETURN_IF_ERROR(ForEachRecord(
      spec.path, options.field, [&](const std::string& where, StatusOr<json> record) -> Status {
        if (!record.ok()) return skip_or_fail(where, record.status());
        StatusOr<StatusOr<Document>> converted = loader.Convert(*record);
        if (!converted.ok()) return InvalidArgument(where + ": " + converted.status().message());
        StatusOr<Document> doc = std::move(converted).value();
        if (!doc.ok()) return skip_or_fail(where, doc.status());
        dataset.documents.push_back(std::move(doc).value());
        return Status();
      }));
  if (dataset.documents.empty()) {
    return InvalidArgument(
        options.field + ": " + spec.path + " has no usable examples" +
        (dataset.skipped_lines > 0
             ? " (" + std::to_string(dataset.skipped_lines) + " bad lines skipped)"
             : std::string()));
  }
  return dataset;
}

}  // namespace qlorad::trainer
