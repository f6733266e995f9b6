// The added tokens of a Hugging Face tokenizer.json (special tokens like <|begin_of_text|> and
// user-added words): found in the raw text before pre-tokenization, leftmost-longest first, and
// never cut by BPE.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

// An added token an encoding matched in its text: the bytes [begin, end) it took (with the
// whitespace that lstrip/rstrip swallowed) and its index among the ids.
struct AddedTokenMatch {
  size_t begin = 0, end = 0, index = 0;
};

class AddedTokens {
 public:
  // `config` is tokenizer.json's "added_tokens" (absent: none); `file` names it in errors.
  static StatusOr<AddedTokens> FromJson(const nlohmann::json& config, const std::string& file);

  // A stretch of the text: an added token's id, or plain text (id < 0) for the model.
  struct Segment {
    int64_t id;
    std::string_view text;
  };
  // Cuts `text` at the added tokens whose `normalized` flag is `normalized`; special ones only when
  // `match_special`. Hugging Face matches the tokens that skip normalization on the original
  // text, and the normalized ones in each normalized stretch left between those.
  std::vector<Segment> Split(std::string_view text, bool normalized, bool match_special) const;

 private:
  struct Token {
    std::string content;
    int64_t id;
    bool special, lstrip, rstrip, normalized;
  };
  std::vector<Token> tokens_;
};

}  // namespace qlorad::trainer
