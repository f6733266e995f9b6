#include "worker/trainer/tokenizer/tokenizer.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "worker/trainer/io/file_util.h"
#include "worker/trainer/tokenizer/bpe_tokenizer.h"

namespace qlorad::trainer {

namespace {

using nlohmann::json;

// Special tokens appear as a plain string or as an AddedToken object {"content": ...}.
std::string TokenText(const json& config, const char* key) {
  if (!config.contains(key)) return "";
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"];
  return "";
}

// chat_template is a string, or (older files) a list of {name, template} with a "default" one.
std::string ChatTemplateText(const json& config) {
  if (!config.contains("chat_template")) return "";
  const json& v = config["chat_template"];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    for (const json& t : v) {
      if (t.is_object() && t.value("name", "") == "default" && t.contains("template") &&
          t["template"].is_string()) {
        return t["template"];
      }
    }
  }
  return "";
}

}  // namespace

std::vector<int64_t> ByteTokenize(const std::string& text) {
  std::vector<int64_t> ids;
  ids.reserve(text.size() + 2);
  ids.push_back(kBosId);
  for (unsigned char c : text) ids.push_back(c);
  ids.push_back(kEosId);
  return ids;
}

ModelTokenizer ModelTokenizer::ByteLevel() {
  ModelTokenizer t;
  t.eos_id_ = kEosId;
  return t;
}

StatusOr<ModelTokenizer> ModelTokenizer::ForModelDir(const std::string& model_dir) {
  const std::string tokenizer_path = model_dir + "/tokenizer.json";
  if (model_dir.empty() || !std::filesystem::exists(tokenizer_path)) return ByteLevel();
  QLORAD_ASSIGN_OR_RETURN(BpeTokenizer bpe, BpeTokenizer::Load(tokenizer_path));
  ModelTokenizer t;
  t.bpe_ = std::make_shared<const BpeTokenizer>(std::move(bpe));
  const std::string config_path = model_dir + "/tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    QLORAD_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(config_path));
    const json config = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!config.is_object()) return InvalidArgument(config_path + ": not a JSON object");
    t.bos_token_ = TokenText(config, "bos_token");
    t.eos_token_ = TokenText(config, "eos_token");
    t.chat_template_ = ChatTemplateText(config);
  }
  // transformers 4.43+ may keep the template in its own file, which then wins.
  const std::string jinja_path = model_dir + "/chat_template.jinja";
  if (std::filesystem::exists(jinja_path)) {
    QLORAD_ASSIGN_OR_RETURN(t.chat_template_, ReadFileToString(jinja_path));
  }
  if (!t.eos_token_.empty()) {
    QLORAD_ASSIGN_OR_RETURN(std::vector<int64_t> eos, t.bpe_->Encode(t.eos_token_, false, true));
    if (eos.size() == 1) t.eos_id_ = eos[0];
  }
  return t;
}

StatusOr<ModelTokenizer::Encoding> ModelTokenizer::EncodeForSuffixes(std::string_view text,
                                                                     bool add_special) const {
  Encoding out;
  if (bpe_ == nullptr) {
    QLORAD_ASSIGN_OR_RETURN(out.ids, Encode(text, add_special));
  } else {
    QLORAD_ASSIGN_OR_RETURN(out.ids,
                            bpe_->Encode(text, add_special, /*match_special=*/true, &out.added));
  }
  return out;
}

StatusOr<size_t> ModelTokenizer::SharedSuffix(std::string_view text, size_t offset,
                                              const Encoding& whole, bool add_special) const {
  // The suffix's ids are `head` then whole.ids[joins_at..]: those are shared, and so are as many
  // of head's last ids as whole.ids has just before joins_at.
  BpeTokenizer::SuffixIds suffix;
  if (bpe_ == nullptr) {
    // One id per byte, BOS first: the suffix's bytes are the whole text's from `offset` on.
    if (add_special) suffix.head = {kBosId};
    suffix.joins_at = offset + (add_special ? 1 : 0);
  } else {
    QLORAD_ASSIGN_OR_RETURN(suffix, bpe_->EncodeSuffix(text, offset, whole.ids, whole.added,
                                                       add_special, /*match_special=*/true));
  }
  size_t shared = whole.ids.size() - suffix.joins_at;
  for (size_t i = 0; i < suffix.head.size() && i < suffix.joins_at; ++i) {
    if (suffix.head[suffix.head.size() - 1 - i] != whole.ids[suffix.joins_at - 1 - i]) break;
    ++shared;
  }
  return shared;
}

StatusOr<std::vector<int64_t>> ModelTokenizer::Encode(std::string_view text,
                                                      bool add_special) const {
  if (bpe_ != nullptr) return bpe_->Encode(text, add_special, /*match_special=*/true);
  std::vector<int64_t> ids = ByteTokenize(std::string(text));
  if (!add_special) ids = std::vector<int64_t>(ids.begin() + 1, ids.end() - 1);
  return ids;
}

}  // namespace qlorad::trainer
