#include "worker/trainer/adapter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/hf_weights.h"
#include "worker/trainer/qlora.h"
#include "worker/trainer/tiny_model.h"

namespace qlorad::trainer {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

LlamaModel TinyWithLora(const std::string& model_dir, int r, uint64_t seed) {
  auto weights = HfWeights::Open(model_dir);
  EXPECT_TRUE(weights.ok()) << weights.status().ToString();
  auto model = BuildLlamaModel(
      TinyLlamaConfig(),
      [&](const std::string& name, const std::vector<int64_t>& shape) {
        return weights->Get(name, shape, at::kFloat);
      },
      at::Device(at::kCPU), at::kFloat);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  QuantizationSpec none;
  none.type = "none";
  LoraSpec lora;
  lora.r = r;
  EXPECT_TRUE(ApplyQLora(*model, none, lora, seed).ok());
  return *model;
}

TEST(AdapterTest, KeysFollowPeft) {
  EXPECT_EQ(AdapterKey("model.layers.3.mlp.up_proj", true),
            "base_model.model.model.layers.3.mlp.up_proj.lora_A.weight");
  EXPECT_EQ(AdapterKey("model.layers.3.mlp.up_proj", false),
            "base_model.model.model.layers.3.mlp.up_proj.lora_B.weight");
}

TEST(AdapterTest, SaveThenLoadRestoresEveryParameter) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyModel(dir / "model", 0).ok());
  LlamaModel source = TinyWithLora(dir / "model", 4, 1);
  {
    at::NoGradGuard no_grad;
    for (auto& p : LoraParameters(source)) p.normal_();  // B is zero at init; make it non-trivial
  }
  JobSpec spec;
  spec.model.path = dir / "model";
  spec.lora.r = 4;
  ASSERT_TRUE(SaveAdapter(source, spec, dir / "adapter").ok());
  LlamaModel target = TinyWithLora(dir / "model", 4, 2);
  ASSERT_TRUE(LoadAdapter(target, dir / "adapter").ok());
  const auto a = LoraParameters(source), b = LoraParameters(target);
  ASSERT_EQ(a.size(), 2u * 7 * 2);  // default targets: all seven projections of both layers
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i])) << i;

  LlamaModel wrong_rank = TinyWithLora(dir / "model", 8, 3);
  Status mismatch = LoadAdapter(wrong_rank, dir / "adapter");
  ASSERT_FALSE(mismatch.ok());
  EXPECT_THAT(mismatch.message(), HasSubstr("lora_A.weight' has shape [4, 64]"));
  EXPECT_THAT(mismatch.message(), HasSubstr("adapter_model.safetensors"));
}

}  // namespace
}  // namespace qlorad::trainer
