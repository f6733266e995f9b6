#include "worker/trainer/tokenizer/gguf_vocab.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace qlorad::trainer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// A hand-made Llama-3-shaped tokenizer directory: 4 vocabulary tokens, a special BOS/EOS pair, an
// added non-special token, an unused id (5) and padding up to config.json's vocab size.
class GgufVocabTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("gguf_vocab_test_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::create_directories(dir_);
    tokenizer_ = {
        {"model",
         {{"type", "BPE"},
          {"ignore_merges", true},
          {"vocab",
           {{"a", 0},
            {"b", 1},
            {"ab", 2},
            {"\xc4\xa0"
             "a",
             3}}},
          {"merges", json::array({json::array({"a", "b"}), json::array({" ", "a"})})}}},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           json::array({{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Split}}}},
                        {{"type", "ByteLevel"}, {"use_regex", false}}})}}},
        {"post_processor",
         {{"type", "TemplateProcessing"},
          {"single", json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}}}},
                                  {{"Sequence", {{"id", "A"}}}}})}}},
        {"added_tokens",
         json::array({{{"id", 4}, {"content", "<|begin_of_text|>"}, {"special", true}},
                      {{"id", 6}, {"content", "<|eot_id|>"}, {"special", true}},
                      {{"id", 7}, {"content", "hello\xe2\x96\x81world"}, {"special", false}}})}};
    Write("tokenizer.json", tokenizer_);
    Write("tokenizer_config.json", {{"bos_token", "<|begin_of_text|>"},
                                    {"eos_token", {{"content", "<|eot_id|>"}}},
                                    {"chat_template", "{{ bos_token }}..."}});
    Write("config.json", {{"pad_token_id", 6}, {"eos_token_id", json::array({6, 4})}});
  }
  void TearDown() override {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_, ec)) fs::remove(e.path(), ec);
    fs::remove(dir_, ec);
  }
  void Write(const std::string& name, const json& j) { std::ofstream(dir_ / name) << j.dump(); }
  fs::path dir_;
  json tokenizer_;
};

TEST_F(GgufVocabTest, ReadsTokensTypesMergesAndSpecials) {
  auto vocab = ReadGgufVocab(dir_.string(), 10);
  ASSERT_TRUE(vocab.ok()) << vocab.status().message();
  EXPECT_EQ(vocab->model, "gpt2");
  EXPECT_EQ(vocab->pre, "llama-bpe");
  EXPECT_EQ(vocab->tokens, (std::vector<std::string>{"a", "b", "ab",
                                                     "\xc4\xa0"
                                                     "a",
                                                     "<|begin_of_text|>", "[PAD5]", "<|eot_id|>",
                                                     "hello world", "[PAD8]", "[PAD9]"}));
  // NORMAL 1, CONTROL 3, USER_DEFINED 4 (its "▁" pre-normalized to a space), UNUSED 5.
  EXPECT_EQ(vocab->token_types, (std::vector<int32_t>{1, 1, 1, 1, 3, 5, 3, 4, 5, 5}));
  EXPECT_EQ(vocab->merges, (std::vector<std::string>{"a b", "\xc4\xa0 a"}));
  EXPECT_EQ(vocab->bos_id, 4u);
  EXPECT_EQ(vocab->eos_id, 6u);  // by content; config.json's list names no single id
  EXPECT_EQ(vocab->pad_id, 6u);  // from config.json, as tokenizer_config.json names none
  EXPECT_FALSE(vocab->unk_id.has_value());
  EXPECT_EQ(vocab->add_bos, true);
  EXPECT_FALSE(vocab->add_eos.has_value());
  EXPECT_EQ(vocab->chat_template, "{{ bos_token }}...");
}

TEST_F(GgufVocabTest, RefusalsNameTheFileAndField) {
  auto small = ReadGgufVocab(dir_.string(), 7);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("token id 7 is not below config.json's vocab_size 7"),
            std::string::npos);

  tokenizer_["model"]["byte_fallback"] = true;
  Write("tokenizer.json", tokenizer_);
  auto spm = ReadGgufVocab(dir_.string(), 10);
  ASSERT_FALSE(spm.ok());
  EXPECT_NE(spm.status().message().find("tokenizer.json: model.byte_fallback"), std::string::npos);

  tokenizer_["model"]["byte_fallback"] = false;
  tokenizer_["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+";
  Write("tokenizer.json", tokenizer_);
  auto pre = ReadGgufVocab(dir_.string(), 10);
  ASSERT_FALSE(pre.ok());
  EXPECT_NE(pre.status().message().find("pre_tokenizer: split regex '\\s+'"), std::string::npos);

  fs::remove(dir_ / "tokenizer.json");
  auto missing = ReadGgufVocab(dir_.string(), 10);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("tokenizer.json: missing"), std::string::npos);
}

}  // namespace
}  // namespace qlorad::trainer
