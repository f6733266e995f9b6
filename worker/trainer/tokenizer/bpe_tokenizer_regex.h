// A compiled PCRE2 pattern (UTF-8, Unicode properties) that cuts text the way a Hugging Face
// `Split` pre-tokenizer with behavior "Isolated" does: every match is a piece, and so is every
// stretch of text between matches.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

class RegexSplitter {
 public:
  // `context` prefixes errors (e.g. "tokenizer.json: pre_tokenizer").
  static StatusOr<RegexSplitter> Compile(const std::string& pattern, const std::string& context);

  // Appends the pieces of `text` (valid UTF-8) to `out`, in order; they concatenate to `text`.
  Status SplitIsolated(std::string_view text, std::vector<std::string>& out) const;

 private:
  struct Code;
  explicit RegexSplitter(std::shared_ptr<Code> code) : code_(std::move(code)) {}
  std::shared_ptr<Code> code_;
};

}  // namespace qlorad::trainer
