#include "worker/trainer/model/adapter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/model/qlora.h"
#include "worker/trainer/model/tiny_model.h"
#include "worker/trainer/weights/hf_weights.h"
#include "worker/trainer/weights/safetensors_torch.h"

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
  none.type = QuantizationType::kNone;
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

TEST(AdapterTest, LoadsPeftNamedKeysAndRefusesStrayTensors) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyModel(dir / "model", 0).ok());
  LlamaModel source = TinyWithLora(dir / "model", 4, 1);
  std::vector<std::pair<std::string, at::Tensor>> named;  // PEFT's in-memory names, in bf16
  for (const auto& [name, linear] : source->NamedLinears()) {
    named.emplace_back("base_model.model." + name + ".lora_A.default.weight",
                       linear->lora_a().to(at::kBFloat16));
    named.emplace_back("base_model.model." + name + ".lora_B.default.weight",
                       linear->lora_b().to(at::kBFloat16));
  }
  const std::string adapter = dir / "named";
  std::filesystem::create_directories(adapter);
  ASSERT_TRUE(SaveTensors(adapter + "/adapter_model.safetensors", named).ok());
  LlamaModel target = TinyWithLora(dir / "model", 4, 2);
  ASSERT_TRUE(LoadAdapter(target, adapter).ok());
  const auto a = LoraParameters(source), b = LoraParameters(target);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(a[i].to(at::kBFloat16).to(at::kFloat), b[i])) << i;
  }

  named.emplace_back("base_model.model.lm_head.lora_A.weight", at::zeros({4, 64}));
  ASSERT_TRUE(SaveTensors(adapter + "/adapter_model.safetensors", named).ok());
  Status stray = LoadAdapter(target, adapter);
  EXPECT_THAT(stray.message(), HasSubstr("'base_model.model.lm_head.lora_A.weight' belongs to no "
                                         "adapted layer"));
}

TEST(AdapterTest, ReadsPeftConfigAndRefusesWhatItCannotReproduce) {
  TempDir dir;
  const std::string adapter = dir / "a";
  std::filesystem::create_directories(adapter);
  auto write = [&](const std::string& text) {
    std::ofstream(adapter + "/adapter_config.json") << text;
  };
  write(R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_rslora": true,
            "target_modules": "all-linear", "bias": "none", "use_dora": false,
            "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": null})");
  auto lora = ReadAdapterConfig(adapter);
  ASSERT_TRUE(lora.ok()) << lora.status().ToString();
  EXPECT_EQ(lora->r, 8);
  EXPECT_TRUE(lora->use_rslora);
  EXPECT_EQ(lora->target_modules.size(), 7u);
  EXPECT_DOUBLE_EQ(lora->Scale(), 16.0 / std::sqrt(8.0));

  write(R"({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "use_dora": true})");
  EXPECT_THAT(ReadAdapterConfig(adapter).status().message(),
              HasSubstr("adapter_config.json: use_dora: true is not supported"));
  write(R"({"r": 8, "lora_alpha": 16, "target_modules": ".*proj"})");
  EXPECT_THAT(ReadAdapterConfig(adapter).status().message(), HasSubstr("target_modules"));
}

}  // namespace
}  // namespace qlorad::trainer
