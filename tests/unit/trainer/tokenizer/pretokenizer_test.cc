// PreTokenizer's regex Split through PCRE2 against pieces the `tokenizers` library produced for
// the Llama 3 pattern (pre_tokenizers.Split(..., "isolated").pre_tokenize_str).
#include "worker/trainer/tokenizer/pretokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace qlorad::trainer {
namespace {

using ::testing::ElementsAre;

constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::vector<std::string> SplitWith(const nlohmann::json& config, const std::string& text,
                                   bool at_text_start) {
  auto pre = PreTokenizer::FromJson(config, "tokenizer.json");
  EXPECT_TRUE(pre.ok()) << pre.status().message();
  if (!pre.ok()) return {};
  auto pieces = pre->Split(text, at_text_start);
  EXPECT_TRUE(pieces.ok()) << pieces.status().message();
  return pieces.ok() ? *pieces : std::vector<std::string>{};
}

std::vector<std::string> Pieces(const std::string& text) {
  return SplitWith(
      {{"type", "Split"}, {"pattern", {{"Regex", kLlama3Pattern}}}, {"behavior", "Isolated"}}, text,
      true);
}

TEST(BpePreTokenizerTest, Llama3PatternCutsLikeTokenizers) {
  EXPECT_THAT(Pieces("Hello  world 123456!!\n\nI'M ok"),
              ElementsAre("Hello", " ", " world", " ", "123", "456", "!!\n\n", "I", "'M", " ok"));
  EXPECT_THAT(Pieces("na\u00EFve \u6771\u4EAC \U0001F600x\t\ty "),
              ElementsAre("na\u00EFve", " \u6771\u4EAC", " \U0001F600", "x", "\t", "\ty", " "));
  EXPECT_THAT(Pieces(""), ElementsAre());
}

TEST(BpePreTokenizerTest, LiteralSplitPatternIsNotARegex) {
  EXPECT_THAT(
      SplitWith({{"type", "Split"}, {"pattern", {{"String", "."}}}, {"behavior", "Isolated"}},
                "a.b", true),
      ElementsAre("a", ".", "b"));
}

std::vector<std::string> MetaspacePieces(const std::string& scheme, bool split,
                                         const std::string& text, bool at_text_start) {
  return SplitWith({{"type", "Metaspace"},
                    {"replacement", "\u2581"},
                    {"prepend_scheme", scheme},
                    {"split", split}},
                   text, at_text_start);
}

TEST(BpePreTokenizerTest, MetaspaceMarksSpacesAndSplitsBeforeThem) {
  // As tokenizers' Metaspace(prepend_scheme="first", split=True) gives for "Hello  world a".
  EXPECT_THAT(MetaspacePieces("first", true, "Hello  world a", true),
              ElementsAre("\u2581Hello", "\u2581", "\u2581world", "\u2581a"));
  // "first" prepends only where the input begins; "always" everywhere; "never" nowhere.
  EXPECT_THAT(MetaspacePieces("first", false, "a b", false), ElementsAre("a\u2581b"));
  EXPECT_THAT(MetaspacePieces("always", false, "a b", false), ElementsAre("\u2581a\u2581b"));
  EXPECT_THAT(MetaspacePieces("never", false, "a b", true), ElementsAre("a\u2581b"));
}

}  // namespace
}  // namespace qlorad::trainer
