#include "worker/trainer/train/classification_export.h"

#include <gtest/gtest.h>

namespace qlorad::trainer {
namespace {

using nlohmann::json;

const std::vector<std::string> kLabels = {"negative", "neutral", "positive"};

TEST(ClassificationExportTest, ConfigNamesTheArchitectureLabelsAndPadToken) {
  const json base = {{"model_type", "llama"},
                     {"architectures", {"LlamaForCausalLM"}},
                     {"hidden_size", 64},
                     {"pad_token_id", nullptr},
                     {"eos_token_id", 2}};
  const StatusOr<json> config = SequenceClassificationConfig(base, kLabels, "m/config.json");
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ((*config)["architectures"], json({"LlamaForSequenceClassification"}));
  EXPECT_EQ((*config)["num_labels"], 3);
  EXPECT_EQ((*config)["id2label"], json({{"0", "negative"}, {"1", "neutral"}, {"2", "positive"}}));
  EXPECT_EQ((*config)["label2id"], json({{"negative", 0}, {"neutral", 1}, {"positive", 2}}));
  EXPECT_EQ((*config)["problem_type"], "single_label_classification");
  EXPECT_EQ((*config)["pad_token_id"], 2);  // none set: the EOS id
  EXPECT_EQ((*config)["hidden_size"], 64);  // the rest as it was
}

TEST(ClassificationExportTest, PadTokenIsTheBasesOrTheFirstEos) {
  json base = {{"model_type", "qwen2"}, {"pad_token_id", 7}, {"eos_token_id", 2}};
  StatusOr<json> config = SequenceClassificationConfig(base, kLabels, "m/config.json");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ((*config)["pad_token_id"], 7);
  EXPECT_EQ((*config)["architectures"], json({"Qwen2ForSequenceClassification"}));
  base = {{"model_type", "mistral"}, {"eos_token_id", {128001, 128009}}};
  config = SequenceClassificationConfig(base, kLabels, "m/config.json");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ((*config)["pad_token_id"], 128001);
}

TEST(ClassificationExportTest, NoPadOrEosTokenLeavesPadNull) {
  // transformers then pools each row's last token, one row per batch.
  const StatusOr<json> config =
      SequenceClassificationConfig({{"model_type", "llama"}}, kLabels, "m/config.json");
  ASSERT_TRUE(config.ok());
  ASSERT_TRUE(config->contains("pad_token_id"));
  EXPECT_TRUE((*config)["pad_token_id"].is_null());
}

TEST(ClassificationExportTest, RefusalsNameTheFileAndField) {
  StatusOr<json> config = SequenceClassificationConfig(
      {{"model_type", "llama"}, {"pad_token_id", "<pad>"}}, kLabels, "m/config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("m/config.json: pad_token_id"), std::string::npos)
      << config.status().message();
  config = SequenceClassificationConfig({{"model_type", "gemma"}, {"eos_token_id", 1}}, kLabels,
                                        "m/config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("m/config.json: model_type: 'gemma'"), std::string::npos)
      << config.status().message();
}

}  // namespace
}  // namespace qlorad::trainer
