#include "worker/trainer/model/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace qlorad::trainer {
namespace {

using ::testing::HasSubstr;

TEST(ModelConfigTest, DefaultsForKvHeadsAndHeadDim) {
  auto c = ParseLlamaConfig(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100})",
                            "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_FALSE(c->tie_word_embeddings);
}

TEST(ModelConfigTest, RoundTripsThroughJson) {
  LlamaConfig c;
  c.hidden_size = 48;
  c.intermediate_size = 100;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 77;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.tie_word_embeddings = true;
  auto back = ParseLlamaConfig(LlamaConfigJson(c), "x");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->head_dim, 16);
  EXPECT_EQ(back->num_key_value_heads, 2);
  EXPECT_DOUBLE_EQ(back->rope_theta, 500000.0);
  EXPECT_TRUE(back->tie_word_embeddings);
}

TEST(ModelConfigTest, ErrorsNameFileAndField) {
  const std::string base = R"("hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
      "num_attention_heads": 8, "vocab_size": 100)";
  EXPECT_THAT(ParseLlamaConfig("{" + base + R"(, "num_key_value_heads": 3})", "/m/config.json")
                  .status()
                  .message(),
              HasSubstr("/m/config.json: num_key_value_heads"));
  EXPECT_THAT(ParseLlamaConfig(R"({"hidden_size": 64})", "c").status().message(),
              HasSubstr("intermediate_size: missing"));
  EXPECT_THAT(ParseLlamaConfig("{" + base + R"(, "rope_scaling": {"rope_type": "yarn"}})", "c")
                  .status()
                  .message(),
              HasSubstr("rope_scaling: rope type 'yarn' is not supported"));
  EXPECT_THAT(ParseLlamaConfig("{" + base + R"(, "model_type": "gpt2"})", "c").status().message(),
              HasSubstr("model_type"));
  EXPECT_THAT(ParseLlamaConfig("{nope", "c").status().message(), HasSubstr("not valid JSON"));
}

// `{<a valid base config>, <extra fields>}`; built with append (GCC 12's -Warray-bounds misfires on
// chains of string + literal temporaries).
std::string WithBase(const std::string& extra) {
  std::string json = R"({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
      "num_attention_heads": 8, "vocab_size": 100)";
  json.append(extra);
  json.append("}");
  return json;
}

// Sizes are bounded as they are read, before anything is sized by them: a billion layers once
// cost 8 GB and 17 s before the trainer failed.
TEST(ModelConfigTest, SizesPastTheirBoundsAreRefusedNamingFileAndField) {
  const std::pair<const char*, const char*> kCases[] = {
      {R"(, "num_hidden_layers": 1000000000)",
       "num_hidden_layers: 1000000000 is more than the trainer takes (at most 1024)"},
      {R"(, "num_hidden_layers": 1e9)", "num_hidden_layers: must be a positive integer"},
      {R"(, "num_hidden_layers": 18446744073709551615)",
       "num_hidden_layers: must be a positive integer"},
      {R"(, "hidden_size": 131072)", "hidden_size: 131072 is more than"},
      {R"(, "intermediate_size": 1048576)", "intermediate_size: 1048576 is more than"},
      {R"(, "num_attention_heads": 2048)", "num_attention_heads: 2048 is more than"},
      {R"(, "num_key_value_heads": 4096)", "num_key_value_heads: 4096 is more than"},
      {R"(, "head_dim": 4096)", "head_dim: 4096 is more than"},
      {R"(, "vocab_size": 4194304)", "vocab_size: 4194304 is more than"},
      {R"(, "max_position_embeddings": 1073741824)", "max_position_embeddings: 1073741824 is more"},
      {R"(, "model_type": "mistral", "sliding_window": 1073741824)", "sliding_window: 1073741824"},
  };
  for (const auto& [extra, why] : kCases) {
    auto c = ParseLlamaConfig(WithBase(extra), "/m/config.json");
    ASSERT_FALSE(c.ok()) << extra;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr(std::string("/m/config.json: ") + why));
  }
  auto at_bound = ParseLlamaConfig(WithBase(R"(, "num_hidden_layers": 1024)"), "c");
  ASSERT_TRUE(at_bound.ok()) << at_bound.status().ToString();
  EXPECT_EQ(at_bound->sliding_windows.size(), 1024u);
}

TEST(ModelConfigTest, DeeplyNestedValueIsRefusedNotACrash) {
  // The error message would print the value, which recurses once per level.
  std::string extra = R"(, "hidden_act": )";
  extra.append(100000, '[');
  extra.append(100000, ']');
  auto c = ParseLlamaConfig(WithBase(extra), "/m/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("/m/config.json: JSON nested deeper than 128"));
}

// transformers 5 writes dtype, older files torch_dtype; transformers reads a non-null dtype
// before torch_dtype (PretrainedConfig.__post_init__), and so do we.
TEST(ModelConfigTest, ReadsDtypeBeforeTorchDtype) {
  const std::pair<const char*, const char*> kCases[] = {
      {"", "float32"},
      {R"(, "torch_dtype": "float16")", "float16"},
      {R"(, "dtype": "bfloat16")", "bfloat16"},
      {R"(, "dtype": "bfloat16", "torch_dtype": "float16")", "bfloat16"},
      {R"(, "dtype": null, "torch_dtype": "float16")", "float16"},
  };
  for (const auto& [extra, want] : kCases) {
    auto c = ParseLlamaConfig(WithBase(extra), "c");
    ASSERT_TRUE(c.ok()) << extra << ": " << c.status().ToString();
    EXPECT_EQ(c->torch_dtype, want) << extra;
  }
  auto bad = ParseLlamaConfig(WithBase(R"(, "dtype": 16)"), "cfg.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("cfg.json: dtype: expected a string"));
}

TEST(ModelConfigTest, ReadsLlama3RopeInBothLayouts) {
  const std::string scaling = R"("rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})";
  std::string newer_extra = R"(, "rope_parameters": {"rope_theta": 500000.0, )";
  newer_extra.append(scaling);
  std::string older_extra = R"(, "rope_theta": 500000.0, "rope_scaling": {)";
  older_extra.append(scaling);
  auto newer = ParseLlamaConfig(WithBase(newer_extra), "c");
  auto older = ParseLlamaConfig(WithBase(older_extra), "c");
  for (const auto* c : {&newer, &older}) {
    ASSERT_TRUE(c->ok()) << c->status().ToString();
    EXPECT_DOUBLE_EQ((*c)->rope_theta, 500000.0);
    EXPECT_EQ((*c)->rope_scaling.type, "llama3");
    EXPECT_DOUBLE_EQ((*c)->rope_scaling.factor, 8.0);
    EXPECT_DOUBLE_EQ((*c)->rope_scaling.high_freq_factor, 4.0);
    EXPECT_EQ((*c)->rope_scaling.original_max_position_embeddings, 8192);
  }
  EXPECT_THAT(
      ParseLlamaConfig(WithBase(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0})"), "c")
          .status()
          .message(),
      HasSubstr("rope_scaling: original_max_position_embeddings: missing"));
}

TEST(ModelConfigTest, ArchitectureDifferences) {
  auto mistral =
      ParseLlamaConfig(WithBase(R"(, "model_type": "mistral", "sliding_window": 4096)"), "c");
  ASSERT_TRUE(mistral.ok()) << mistral.status().ToString();
  EXPECT_EQ(mistral->sliding_windows, (std::vector<int64_t>{4096, 4096}));
  EXPECT_FALSE(mistral->qkv_bias);
  auto mistral_full =
      ParseLlamaConfig(WithBase(R"(, "model_type": "mistral", "sliding_window": null)"), "c");
  ASSERT_TRUE(mistral_full.ok());
  EXPECT_EQ(mistral_full->sliding_windows, (std::vector<int64_t>{0, 0}));

  auto qwen = ParseLlamaConfig(
      WithBase(R"(, "model_type": "qwen2", "sliding_window": 32, "use_sliding_window": false)"),
      "c");
  ASSERT_TRUE(qwen.ok());
  EXPECT_TRUE(qwen->qkv_bias);
  EXPECT_FALSE(qwen->o_bias);
  EXPECT_EQ(qwen->sliding_windows, (std::vector<int64_t>{0, 0}));
  auto qwen_sliding = ParseLlamaConfig(WithBase(R"(, "model_type": "qwen2", "sliding_window": 32,
      "use_sliding_window": true, "max_window_layers": 1)"),
                                       "c");
  ASSERT_TRUE(qwen_sliding.ok());
  EXPECT_EQ(qwen_sliding->sliding_windows, (std::vector<int64_t>{0, 32}));

  auto llama = ParseLlamaConfig(WithBase(R"(, "attention_bias": true)"), "c");
  ASSERT_TRUE(llama.ok());
  EXPECT_TRUE(llama->qkv_bias && llama->o_bias);
  EXPECT_THAT(ParseLlamaConfig(WithBase(R"(, "hidden_act": "gelu")"), "c").status().message(),
              HasSubstr("hidden_act"));
}

}  // namespace
}  // namespace qlorad::trainer
