#include "worker/trainer/model/tiny_model.h"

#include <gtest/gtest.h>

#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/io/safetensors.h"
#include "worker/trainer/model/model_config.h"

namespace qlorad::trainer {
namespace {

using testing::ReadFile;
using testing::TempDir;

TEST(TinyModelTest, SameSeedSameBytesOtherSeedOtherBytes) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyModel(dir / "a", 0).ok());
  ASSERT_TRUE(MakeTinyModel(dir / "b", 0).ok());
  ASSERT_TRUE(MakeTinyModel(dir / "c", 1).ok());
  const std::string a = ReadFile(dir / "a/model.safetensors");
  EXPECT_EQ(a, ReadFile(dir / "b/model.safetensors"));
  EXPECT_NE(a, ReadFile(dir / "c/model.safetensors"));
}

TEST(TinyModelTest, HasTheHfLayoutAndConfig) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyModel(dir.path(), 5).ok());
  auto config = LoadLlamaConfig(dir.path());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->vocab_size, 320);
  EXPECT_EQ(config->num_key_value_heads, 2);
  EXPECT_EQ(config->head_dim, 16);
  EXPECT_EQ(config->intermediate_size, 176);
  EXPECT_NE(ReadFile(dir / "config.json").find("LlamaForCausalLM"), std::string::npos);
  auto file = SafetensorsFile::Open(dir / "model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->tensors().size(), 2u * 9 + 3);
  const auto* k = file->Find("model.layers.1.self_attn.k_proj.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(k->dtype, "F32");
  const auto* down = file->Find("model.layers.0.mlp.down_proj.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->shape, (std::vector<int64_t>{64, 176}));
  for (const auto& t : file->tensors()) EXPECT_EQ(t.numel() % 64, 0) << t.name;  // whole NF4 blocks
  ASSERT_NE(file->Find("lm_head.weight"), nullptr);
}

}  // namespace
}  // namespace qlorad::trainer
