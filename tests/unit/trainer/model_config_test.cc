#include "worker/trainer/model_config.h"

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

}  // namespace
}  // namespace qlorad::trainer
