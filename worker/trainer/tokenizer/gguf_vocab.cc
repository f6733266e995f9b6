#include "worker/trainer/tokenizer/gguf_vocab.h"

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "worker/trainer/io/file_util.h"
#include "worker/trainer/io/json_file.h"

namespace qlorad::trainer {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The split regexes of tokenizer.json that llama.cpp has its own pre-tokenizer for, by name.
constexpr const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

bool EndsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
bool StartsWith(const std::string& s, const std::string& head) {
  return s.rfind(head, 0) == 0;
}

// convert_hf_to_gguf's does_token_look_special: added tokens some models forget to mark special.
bool LooksSpecial(const std::string& t) {
  if (t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]") return true;
  if (StartsWith(t, "<|") && EndsWith(t, "|>")) return true;
  if (StartsWith(t, "<\xef\xbd\x9c") && EndsWith(t, "\xef\xbd\x9c>")) return true;  // <｜ ... ｜>
  return StartsWith(t, "<unused") && EndsWith(t, ">");
}

std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

// Every Split pattern in the pre-tokenizer (a Sequence or a single one).
void CollectSplitPatterns(const json& pre, std::vector<std::string>* out) {
  if (!pre.is_object()) return;
  const std::string type = pre.value("type", "");
  if (type == "Sequence") {
    for (const json& p : pre.value("pretokenizers", json::array())) CollectSplitPatterns(p, out);
  } else if (type == "Split") {
    const json pattern = pre.value("pattern", json::object());
    if (pattern.contains("Regex")) out->push_back(pattern["Regex"].get<std::string>());
    if (pattern.contains("String")) out->push_back(pattern["String"].get<std::string>());
  }
}

StatusOr<std::string> PreTokenizerName(const json& tokenizer, const std::string& path) {
  std::vector<std::string> splits;
  CollectSplitPatterns(tokenizer.value("pre_tokenizer", json()), &splits);
  if (splits.size() == 1 && splits[0] == kLlama3Split) return std::string("llama-bpe");
  if (splits.size() == 1 && splits[0] == kQwen2Split) return std::string("qwen2");
  return InvalidArgument(
      path + ": pre_tokenizer: " +
      (splits.empty()
           ? std::string("no split regex")
           : "split regex '" + splits[0] + "'" + (splits.size() > 1 ? " (and others)" : "")) +
      " is not one llama.cpp has a pre-tokenizer for that --format gguf knows (Llama 3's "
      "llama-bpe, Qwen2's qwen2); a GGUF naming the wrong one would tokenize differently");
}

StatusOr<std::vector<std::string>> Merges(const json& model, const std::string& path) {
  std::vector<std::string> out;
  const json merges = model.value("merges", json::array());
  if (!merges.is_array()) return InvalidArgument(path + ": model.merges: not a list");
  out.reserve(merges.size());
  for (const json& m : merges) {
    if (m.is_string()) {
      out.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      // Pairs may hold spaces; the "a b" form escapes them as U+0120 (gguf-py's encoding).
      out.push_back(ReplaceAll(m[0].get<std::string>(), " ", "\xc4\xa0") + " " +
                    ReplaceAll(m[1].get<std::string>(), " ", "\xc4\xa0"));
    } else {
      return InvalidArgument(path + ": model.merges: entry " + std::to_string(out.size()) +
                             " is neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
  return out;
}

// A special token's text in tokenizer_config.json: "text" or {"content": "text", ...}.
std::optional<std::string> TokenContent(const json& entry) {
  if (entry.is_string()) return entry.get<std::string>();
  if (entry.is_object() && entry.contains("content") && entry["content"].is_string()) {
    return entry["content"].get<std::string>();
  }
  return std::nullopt;
}

// add_bos/add_eos as the post-processor's single-sequence template shows them: a special token
// before $A is the BOS added, one after it the EOS (gguf-py's SpecialVocab reads it so too).
void AddSpecialFromTemplate(const json& tokenizer, const std::optional<std::string>& bos,
                            const std::optional<std::string>& eos, GgufVocab* vocab) {
  const json post = tokenizer.value("post_processor", json());
  if (!post.is_object()) return;
  std::vector<json> processors;
  if (post.value("type", "") == "Sequence") {
    for (const json& p : post.value("processors", json::array())) processors.push_back(p);
  } else {
    processors.push_back(post);
  }
  for (const json& p : processors) {
    if (p.value("type", "") != "TemplateProcessing") continue;
    const json single = p.value("single", json::array());
    if (!single.is_array() || single.size() < 2) continue;
    const auto special_id = [](const json& item) -> std::optional<std::string> {
      if (item.contains("SpecialToken")) return item["SpecialToken"].value("id", "");
      return std::nullopt;
    };
    if (auto first = special_id(single.front())) vocab->add_bos = bos && *first == *bos;
    if (auto last = special_id(single.back())) vocab->add_eos = eos && *last == *eos;
  }
}

std::optional<std::string> ChatTemplate(const std::string& dir, const json& tokenizer_config,
                                        GgufVocab* vocab) {
  const json t = tokenizer_config.value("chat_template", json());
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    // Named templates ([{name, template}]): the default one is the model's chat format.
    for (const json& named : t) {
      if (named.value("name", "") == "default" && named.contains("template")) {
        vocab->notes.push_back(
            "tokenizer_config.json: chat_template: only the 'default' of its named templates is "
            "written");
        return named["template"].get<std::string>();
      }
    }
  }
  if (auto jinja = ReadFileToString(dir + "/chat_template.jinja"); jinja.ok()) return *jinja;
  if (auto j = ReadJsonFile(dir + "/chat_template.json");
      j.ok() && (*j).contains("chat_template")) {
    if ((*j)["chat_template"].is_string()) return (*j)["chat_template"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

StatusOr<GgufVocab> ReadGgufVocab(const std::string& model_dir, int64_t vocab_size) {
  const std::string path = model_dir + "/tokenizer.json";
  if (!fs::is_regular_file(path)) {
    return NotFound(path +
                    ": missing: --format gguf writes the tokenizer into the file and reads "
                    "it from the model directory's tokenizer.json");
  }
  QLORAD_ASSIGN_OR_RETURN(const json tokenizer, ReadJsonFile(path));
  GgufVocab vocab;
  try {
    const json model = tokenizer.value("model", json::object());
    if (model.value("type", "") != "BPE") {
      return InvalidArgument(path + ": model.type: '" + model.value("type", "") +
                             "': --format gguf writes BPE vocabularies only");
    }
    if (model.value("byte_fallback", false)) {
      return InvalidArgument(
          path +
          ": model.byte_fallback: a SentencePiece-style BPE vocabulary (Llama 2, Mistral "
          "7B) is not supported by --format gguf yet; byte-level BPE (Llama 3, Qwen2) is");
    }
    QLORAD_ASSIGN_OR_RETURN(vocab.pre, PreTokenizerName(tokenizer, path));
    QLORAD_ASSIGN_OR_RETURN(vocab.merges, Merges(model, path));

    // id -> text, and which ids are added tokens (special or not).
    std::map<int64_t, std::string> by_id;
    const json model_vocab = model.value("vocab", json::object());
    for (const auto& [text, id] : model_vocab.items()) {
      by_id[id.get<int64_t>()] = text;
    }
    std::map<int64_t, bool> added_special;  // id -> special
    const json added = tokenizer.value("added_tokens", json::array());
    for (const json& a : added) {
      const int64_t id = a.at("id").get<int64_t>();
      by_id[id] = a.at("content").get<std::string>();
      added_special[id] = a.value("special", false);
    }
    if (!by_id.empty() && by_id.rbegin()->first >= vocab_size) {
      return InvalidArgument(path + ": token id " + std::to_string(by_id.rbegin()->first) +
                             " is not below config.json's vocab_size " +
                             std::to_string(vocab_size));
    }
    vocab.tokens.reserve(vocab_size);
    vocab.token_types.reserve(vocab_size);
    for (int64_t i = 0; i < vocab_size; ++i) {
      auto it = by_id.find(i);
      if (it == by_id.end()) {
        // Rows of the embedding no token uses (vocab_size is often padded to a round number).
        vocab.tokens.push_back("[PAD" + std::to_string(i) + "]");
        vocab.token_types.push_back(static_cast<int32_t>(GgufTokenType::kUnused));
        continue;
      }
      std::string text = it->second;
      GgufTokenType type = GgufTokenType::kNormal;
      if (auto a = added_special.find(i); a != added_special.end()) {
        if (a->second || LooksSpecial(text)) {
          type = GgufTokenType::kControl;
        } else {
          type = GgufTokenType::kUserDefined;
          text = ReplaceAll(text, "\xe2\x96\x81", " ");  // llama.cpp expects them pre-normalized
        }
      }
      vocab.tokens.push_back(std::move(text));
      vocab.token_types.push_back(static_cast<int32_t>(type));
    }

    // Special tokens: by their text in tokenizer_config.json, else by id in config.json.
    json tokenizer_config = json::object();
    const std::string config_path = model_dir + "/tokenizer_config.json";
    const bool have_tokenizer_config = fs::is_regular_file(config_path);
    if (have_tokenizer_config) {
      QLORAD_ASSIGN_OR_RETURN(tokenizer_config, ReadJsonFile(config_path));
    } else {
      vocab.notes.push_back(config_path +
                            ": missing: special tokens are taken from config.json only");
    }
    const auto content_of = [&](const std::string& type) {
      return TokenContent(tokenizer_config.value(type + "_token", json()));
    };
    AddSpecialFromTemplate(tokenizer, content_of("bos"), content_of("eos"), &vocab);
    for (const char* type : {"bos", "eos"}) {
      const json flag = tokenizer_config.value("add_" + std::string(type) + "_token", json());
      if (flag.is_boolean()) {
        (std::string(type) == "bos" ? vocab.add_bos : vocab.add_eos) = flag.get<bool>();
      }
    }
    const auto id_of_content = [&](const std::optional<std::string>& content) {
      std::optional<uint32_t> id;
      if (!content) return id;
      for (const json& a : added) {
        if (a.value("content", "") == *content) return id = a.at("id").get<uint32_t>();
      }
      return id;
    };
    vocab.bos_id = id_of_content(content_of("bos"));
    vocab.eos_id = id_of_content(content_of("eos"));
    vocab.unk_id = id_of_content(content_of("unk"));
    vocab.pad_id = id_of_content(content_of("pad"));
    if (auto config = ReadJsonFile(model_dir + "/config.json"); config.ok()) {
      const auto from_config = [&](const std::string& type, std::optional<uint32_t>* id) {
        const json v = (*config).value(type + "_token_id", json());
        // A list (Llama 3.1's several eos ids) names no single token: left out, as gguf-py does.
        if (*id || !v.is_number_integer()) return;
        if (v.get<int64_t>() >= 0 && v.get<int64_t>() < vocab_size) *id = v.get<uint32_t>();
      };
      from_config("bos", &vocab.bos_id);
      from_config("eos", &vocab.eos_id);
      from_config("unk", &vocab.unk_id);
      from_config("pad", &vocab.pad_id);
    }
    vocab.chat_template = ChatTemplate(model_dir, tokenizer_config, &vocab);
  } catch (const json::exception& e) {
    return InvalidArgument(path + ": unexpected layout: " + e.what());
  }
  return vocab;
}

}  // namespace qlorad::trainer
