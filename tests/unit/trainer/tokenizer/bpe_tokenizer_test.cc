// BpeTokenizer on small hand-written tokenizer.json files, where the right ids can be worked out
// by hand: merge order, both merge layouts, ignore_merges, added and special tokens, the
// post-processor's BOS, byte fallback and clear errors. Parity with the `tokenizers` library on
// trained tokenizers lives in tests/python/test_tokenizer_parity.py.
#include "worker/trainer/tokenizer/bpe_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "worker/trainer/tokenizer/bpe_tokenizer_byte_level.h"

namespace qlorad::trainer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

// Characters a, b, c, <, s, >, then merged tokens; no pre-tokenizer, so the text is one piece.
json AbcTokenizer(json merges, bool ignore_merges) {
  return json{
      {"normalizer", nullptr},
      {"pre_tokenizer", nullptr},
      {"model",
       {{"type", "BPE"},
        {"vocab",
         {{"a", 0},
          {"b", 1},
          {"c", 2},
          {"<", 3},
          {"s", 4},
          {">", 5},
          {"ab", 6},
          {"bc", 7},
          {"abc", 8},
          {"<s>", 9}}},
        {"merges", std::move(merges)},
        {"ignore_merges", ignore_merges}}},
  };
}

std::vector<int64_t> Ids(const json& config, const std::string& text, bool add_special = true) {
  auto tokenizer = BpeTokenizer::FromJson(config, "tokenizer.json");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status().message();
  if (!tokenizer.ok()) return {};
  auto ids = tokenizer->Encode(text, add_special);
  EXPECT_TRUE(ids.ok()) << ids.status().message();
  return ids.ok() ? *ids : std::vector<int64_t>{};
}

std::string LoadError(const json& config) {
  auto tokenizer = BpeTokenizer::FromJson(config, "tokenizer.json");
  EXPECT_FALSE(tokenizer.ok());
  return tokenizer.ok() ? "" : tokenizer.status().message();
}

TEST(BpeTokenizerTest, LowerRankMergeWinsWhateverItsPosition) {
  // "abc": a+b and b+c compete for the b; the earlier merge in the list takes it.
  EXPECT_THAT(
      Ids(AbcTokenizer(json::array({json::array({"b", "c"}), json::array({"a", "b"})}), false),
          "abc"),
      ElementsAre(0, 7));
  EXPECT_THAT(
      Ids(AbcTokenizer(json::array({json::array({"a", "b"}), json::array({"b", "c"})}), false),
          "abc"),
      ElementsAre(6, 2));
}

TEST(BpeTokenizerTest, MergesCanChainIntoLongerTokens) {
  const json merges = json::array({json::array({"a", "b"}), json::array({"ab", "c"})});
  EXPECT_THAT(Ids(AbcTokenizer(merges, false), "abcab"), ElementsAre(8, 6));
}

TEST(BpeTokenizerTest, StringMergesReadLikeListMerges) {
  EXPECT_THAT(Ids(AbcTokenizer(json::array({"b c", "a b"}), false), "abc"), ElementsAre(0, 7));
  EXPECT_THAT(Ids(AbcTokenizer(json::array({"a b", "b c"}), false), "abc"), ElementsAre(6, 2));
}

TEST(BpeTokenizerTest, IgnoreMergesTakesAWholePieceFoundInTheVocab) {
  // No merge chain reaches "abc", but with ignore_merges the vocab entry is used directly.
  const json merges = json::array({"b c", "a b"});
  EXPECT_THAT(Ids(AbcTokenizer(merges, false), "abc"), ElementsAre(0, 7));
  EXPECT_THAT(Ids(AbcTokenizer(merges, true), "abc"), ElementsAre(8));
  EXPECT_THAT(Ids(AbcTokenizer(merges, true), "abca"), ElementsAre(0, 7, 0));
}

TEST(BpeTokenizerTest, SpecialTokensAreMatchedBeforeBpeUnlessNoSpecial) {
  json config = AbcTokenizer(json::array(), false);
  config["added_tokens"] =
      json::array({{{"id", 9}, {"content", "<s>"}, {"special", true}, {"normalized", false}}});
  EXPECT_THAT(Ids(config, "a<s>b"), ElementsAre(0, 9, 1));
  // Without specials, "<s>" is plain text: its characters.
  EXPECT_THAT(Ids(config, "a<s>b", /*add_special=*/false), ElementsAre(0, 3, 4, 5, 1));
}

TEST(BpeTokenizerTest, AddedTokensMatchLeftmostLongest) {
  json config = AbcTokenizer(json::array({"a b"}), false);
  config["model"]["vocab"]["bcb"] = 10;
  config["added_tokens"] = json::array({{{"id", 7}, {"content", "bc"}, {"special", false}},
                                        {{"id", 10}, {"content", "bcb"}, {"special", false}}});
  // Non-special added tokens are matched even without specials; "bcb" beats "bc".
  EXPECT_THAT(Ids(config, "abcbab", /*add_special=*/false), ElementsAre(0, 10, 6));
  EXPECT_THAT(Ids(config, "abcab"), ElementsAre(0, 7, 6));
}

TEST(BpeTokenizerTest, TemplatePostProcessorAddsBos) {
  json config = AbcTokenizer(json::array(), false);
  config["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       json::array({{{"type", "ByteLevel"}},
                    {{"type", "TemplateProcessing"},
                     {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                     {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {9}}}}}}}})}};
  EXPECT_THAT(Ids(config, "ab"), ElementsAre(9, 0, 1));
  EXPECT_THAT(Ids(config, ""), ElementsAre(9));
  EXPECT_THAT(Ids(config, "ab", /*add_special=*/false), ElementsAre(0, 1));
  EXPECT_THAT(Ids(config, "", /*add_special=*/false), ElementsAre());
}

// EncodeSuffix re-encodes only up to the next added token and reuses the whole text's ids from
// there: at every offset (inside an added token, inside the spaces an lstrip token swallows, at
// either end) it must give what encoding the suffix on its own gives, with and without BOS.
TEST(BpeTokenizerTest, EncodeSuffixEqualsEncodingTheSuffixAlone) {
  json config = AbcTokenizer(json::array({"a b", "b c", "ab c"}), false);
  for (const char* c : {" ", "[", "E", "]"})
    config["model"]["vocab"][c] = config["model"]["vocab"].size();
  config["added_tokens"] =
      json::array({{{"id", 9}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
                   {{"id", 20},
                    {"content", "[E]"},
                    {"lstrip", true},
                    {"rstrip", true},
                    {"normalized", false}}});
  config["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {9}}}}}}};
  auto tokenizer = BpeTokenizer::FromJson(config, "tokenizer.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
  const std::string text = "<s>ab [E]  abc<s>cab  [E]bc<s";
  for (const bool affixes : {false, true}) {
    std::vector<AddedTokenMatch> matches;
    auto whole = tokenizer->Encode(text, affixes, /*match_special=*/true, &matches);
    ASSERT_TRUE(whole.ok()) << whole.status().message();
    ASSERT_EQ(matches.size(), 4u);
    for (size_t offset = 0; offset <= text.size(); ++offset) {
      auto suffix = tokenizer->EncodeSuffix(text, offset, *whole, matches, affixes, true);
      auto alone = tokenizer->Encode(std::string_view(text).substr(offset), affixes, true);
      ASSERT_TRUE(suffix.ok() && alone.ok());
      std::vector<int64_t> joined = suffix->head;
      joined.insert(joined.end(), whole->begin() + static_cast<std::ptrdiff_t>(suffix->joins_at),
                    whole->end());
      EXPECT_EQ(joined, *alone) << "offset " << offset << ", BOS " << affixes;
    }
  }
}

TEST(BpeTokenizerTest, ByteLevelAlphabetMapsEveryByte) {
  EXPECT_EQ(ByteLevelCodePoint('A'), U'A');
  EXPECT_EQ(ByteLevelCodePoint(' '), U'\u0120');   // "Ġ"
  EXPECT_EQ(ByteLevelCodePoint('\n'), U'\u010A');  // "Ċ"
  EXPECT_EQ(ByteLevelCodePoint(0x00), U'\u0100');
  EXPECT_EQ(ByteLevelCodePoint(0x7F), U'\u0121');
  EXPECT_EQ(ByteLevelCodePoint(0xAD), U'\u0143');  // the one unprintable byte above 0xA0
  EXPECT_EQ(ByteLevelCodePoint(0xC3), U'\u00C3');
  EXPECT_EQ(ByteLevelEncode("\xC3\xA9 "), "\u00C3\u00A9\u0120");  // "é " -> "Ã©Ġ"
}

TEST(BpeTokenizerTest, ByteLevelPreTokenizerEncodesNonAsciiBytes) {
  const json config = {
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array(
             {{{"type", "Split"},
               {"pattern", {{"Regex", R"(\p{L}+|\s+)"}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"model",
       {{"type", "BPE"},
        {"vocab",
         {{"\u00C3", 0},
          {"\u00A9", 1},
          {"\u00C3\u00A9", 2},
          {"\u0120", 3},
          {"t", 4},
          {"\u00E6", 5},
          {"\u013F", 6},
          {"\u00B1", 7}}},
        {"merges", json::array({json::array({"\u00C3", "\u00A9"})})}}}};
  // "é" is C3 A9 -> "Ã©" (merged); "t" stays; the space is "Ġ"; 東 (E6 9D B1) is three bytes.
  EXPECT_THAT(Ids(config, "\u00E9t \u00E9"), ElementsAre(2, 4, 3, 2));
  EXPECT_THAT(Ids(config, "\u6771"), ElementsAre(5, 6, 7));
}

TEST(BpeTokenizerTest, ByteFallbackSpellsUnknownCharactersAsBytes) {
  json config = AbcTokenizer(json::array(), false);
  config["model"]["byte_fallback"] = true;
  config["model"]["vocab"]["<0xC3>"] = 20;
  config["model"]["vocab"]["<0xA9>"] = 21;
  config["model"]["vocab"]["<unk>"] = 22;
  config["model"]["unk_token"] = "<unk>";
  // é has byte tokens; ☃ (E2 98 83) has none, so it is unk.
  EXPECT_THAT(Ids(config, "a\u00E9\u2603b"), ElementsAre(0, 20, 21, 22, 1));
}

TEST(BpeTokenizerTest, UnsupportedComponentsAreNamed) {
  json config = AbcTokenizer(json::array(), false);
  config["model"]["type"] = "WordPiece";
  EXPECT_THAT(LoadError(config),
              HasSubstr("tokenizer.json: model.type WordPiece is not supported"));

  config = AbcTokenizer(json::array(), false);
  config["normalizer"] = {{"type", "NFKC"}};
  EXPECT_THAT(LoadError(config), HasSubstr("normalizer type NFKC is not supported"));

  config = AbcTokenizer(json::array(), false);
  config["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_THAT(LoadError(config), HasSubstr("pre_tokenizer: pre-tokenizer type Whitespace"));

  config["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Removed"}};
  EXPECT_THAT(LoadError(config), HasSubstr("Split behavior Removed is not supported"));

  config["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}};
  EXPECT_THAT(LoadError(config), HasSubstr("regex does not compile"));
}

TEST(BpeTokenizerTest, BadMergesAndFilesAreErrors) {
  EXPECT_THAT(LoadError(AbcTokenizer(json::array({"a c"}), false)), HasSubstr("model.merges[0]"));
  EXPECT_THAT(LoadError(AbcTokenizer(json::array({"abc"}), false)),
              HasSubstr("model.merges[0]: expected"));
  auto missing = BpeTokenizer::Load("/nonexistent/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/tokenizer.json"));

  const std::string path = testing::TempDir() + "/bpe_tokenizer_test_bad.json";
  std::ofstream(path) << "{\"model\": ";
  auto bad = BpeTokenizer::Load(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr(path + ": not valid JSON"));
}

TEST(BpeTokenizerTest, InvalidUtf8InputIsAnError) {
  json config = AbcTokenizer(json::array(), false);
  config["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}};
  auto tokenizer = BpeTokenizer::FromJson(config, "tokenizer.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
  auto ids = tokenizer->Encode("a\xFF", true);
  ASSERT_FALSE(ids.ok());
  EXPECT_THAT(ids.status().message(), HasSubstr("not valid UTF-8"));
}

}  // namespace
}  // namespace qlorad::trainer
