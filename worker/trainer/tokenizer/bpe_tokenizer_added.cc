#include "worker/trainer/tokenizer/bpe_tokenizer_added.h"

namespace qlorad::trainer {
namespace {

// lstrip/rstrip swallow ASCII whitespace next to the token.
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

StatusOr<AddedTokens> AddedTokens::FromJson(const nlohmann::json& config, const std::string& file) {
  AddedTokens result;
  if (config.is_null()) return result;
  if (!config.is_array()) return InvalidArgument(file + ": added_tokens: expected an array");
  for (size_t i = 0; i < config.size(); ++i) {
    const std::string where = file + ": added_tokens[" + std::to_string(i) + "]";
    const nlohmann::json& entry = config[i];
    if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer() ||
        !entry.contains("content") || !entry["content"].is_string()) {
      return InvalidArgument(where + ": expected an object with an integer id and a content");
    }
    if (entry.value("single_word", false)) {
      return InvalidArgument(where + ": single_word true is not supported");
    }
    Token token{entry["content"],
                entry["id"],
                entry.value("special", false),
                entry.value("lstrip", false),
                entry.value("rstrip", false),
                entry.value("normalized", !entry.value("special", false))};
    if (token.content.empty()) return InvalidArgument(where + ": content is empty");
    result.tokens_.push_back(std::move(token));
  }
  return result;
}

std::vector<AddedTokens::Segment> AddedTokens::Split(std::string_view text, bool normalized,
                                                     bool match_special) const {
  std::vector<Segment> out;
  size_t emitted = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const Token* best = nullptr;
    for (const Token& token : tokens_) {
      if (token.normalized != normalized || (token.special && !match_special)) continue;
      if (text.compare(pos, token.content.size(), token.content) == 0 &&
          (best == nullptr || token.content.size() > best->content.size()))
        best = &token;
    }
    if (best == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos;
    size_t end = pos + best->content.size();
    if (best->lstrip)
      while (begin > emitted && IsSpace(text[begin - 1])) --begin;
    if (best->rstrip)
      while (end < text.size() && IsSpace(text[end])) ++end;
    if (begin > emitted) out.push_back({-1, text.substr(emitted, begin - emitted)});
    out.push_back({best->id, text.substr(begin, end - begin)});
    emitted = pos = end;
  }
  if (emitted < text.size()) out.push_back({-1, text.substr(emitted)});
  return out;
}

}  // namespace qlorad::trainer
