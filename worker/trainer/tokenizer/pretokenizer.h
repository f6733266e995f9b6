// The pre-tokenizer of a Hugging Face tokenizer.json: cuts text into pieces that BPE encodes
// one by one. Supported: Split (a regex or a literal, behavior "Isolated"), ByteLevel, Metaspace
// and a Sequence of those; anything else is an error naming the component.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/trainer/tokenizer/bpe_tokenizer_regex.h"

namespace qlorad::trainer {

class PreTokenizer {
 public:
  // `config` is tokenizer.json's "pre_tokenizer" (null: the text is one piece); `file` names
  // tokenizer.json in errors.
  static StatusOr<PreTokenizer> FromJson(const nlohmann::json& config, const std::string& file);

  // The pieces of `text`, after every step. `at_text_start`: `text` begins the whole input (no
  // added token before it), where Metaspace's prepend_scheme "first" adds its "▁".
  StatusOr<std::vector<std::string>> Split(std::string_view text, bool at_text_start) const;

 private:
  struct Step {
    enum class Kind { kSplit, kByteLevel, kMetaspace } kind = Kind::kSplit;
    std::vector<RegexSplitter> splitter;  // kSplit, and kByteLevel with use_regex (0 or 1)
    bool add_prefix_space = false;        // kByteLevel
    std::string replacement;              // kMetaspace: what spaces become ("▁")
    std::string prepend_scheme;           // kMetaspace: always, first or never
    bool split = true;                    // kMetaspace: a piece starts at each replacement
  };
  static Status AddMetaspace(const nlohmann::json& config, const std::string& where,
                             std::vector<Step>& steps);
  static void ApplyMetaspace(const Step& step, std::string piece, bool at_text_start,
                             std::vector<std::string>& out);
  static Status AddSteps(const nlohmann::json& config, const std::string& where,
                         std::vector<Step>& steps);
  std::vector<Step> steps_;
};

}  // namespace qlorad::trainer
