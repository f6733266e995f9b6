#include "worker/trainer/train/gguf_llama.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

namespace qlorad::trainer {
namespace {

// Two heads of head_dim 4, one column: HF's halves (0 1 | 2 3) become llama.cpp's pairs (0 2 1 3).
TEST(GgufLlamaTest, RotaryPermutationInterleavesEachHeadsHalves) {
  std::vector<float> in(8);
  std::iota(in.begin(), in.end(), 0.0f);
  std::vector<float> out(8);
  ASSERT_TRUE(PermuteRotaryRows(in.data(), out.data(), 8, 1, 2).ok());
  EXPECT_EQ(out, (std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7}));
  // Whole rows move: with 3 columns each row keeps its values.
  std::vector<float> wide(8 * 3), wide_out(8 * 3);
  std::iota(wide.begin(), wide.end(), 0.0f);
  ASSERT_TRUE(PermuteRotaryRows(wide.data(), wide_out.data(), 8, 3, 2).ok());
  EXPECT_EQ(std::vector<float>(wide_out.begin() + 3, wide_out.begin() + 6),
            (std::vector<float>{6, 7, 8}));                              // new row 1 is old row 2
  EXPECT_FALSE(PermuteRotaryRows(in.data(), out.data(), 6, 1, 2).ok());  // head_dim 3: odd
}

TEST(GgufLlamaTest, NamesPermutationsAndTypesFollowLlamaCpp) {
  EXPECT_EQ(*GgufTensorName("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(*GgufTensorName("model.layers.11.self_attn.o_proj.weight"),
            "blk.11.attn_output.weight");
  EXPECT_EQ(*GgufTensorName("model.layers.0.self_attn.q_proj.bias"), "blk.0.attn_q.bias");
  EXPECT_EQ(*GgufTensorName("model.layers.3.post_attention_layernorm.weight"),
            "blk.3.ffn_norm.weight");
  EXPECT_EQ(*GgufTensorName("lm_head.weight"), "output.weight");
  EXPECT_FALSE(GgufTensorName("model.layers.0.self_attn.rotary_emb.inv_freq").ok());

  LlamaConfig c;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  EXPECT_EQ(RotaryPermutationHeads(c, "llama", "model.layers.0.self_attn.q_proj.weight"), 32);
  EXPECT_EQ(RotaryPermutationHeads(c, "llama", "model.layers.0.self_attn.k_proj.bias"), 8);
  EXPECT_EQ(RotaryPermutationHeads(c, "llama", "model.layers.0.self_attn.v_proj.weight"), 0);
  EXPECT_EQ(RotaryPermutationHeads(c, "qwen2", "model.layers.0.self_attn.q_proj.weight"), 0);

  EXPECT_EQ(GgufTensorType("blk.0.attn_norm.weight", {64}, GgmlType::kQ8_0), GgmlType::kF32);
  EXPECT_EQ(GgufTensorType("blk.0.attn_q.bias", {64}, GgmlType::kF16), GgmlType::kF32);
  EXPECT_EQ(GgufTensorType("blk.0.attn_q.weight", {64, 64}, GgmlType::kQ8_0), GgmlType::kQ8_0);
  EXPECT_EQ(GgufTensorType("blk.0.ffn_down.weight", {64, 80}, GgmlType::kQ8_0), GgmlType::kF16);
  EXPECT_EQ(GgufTensorType("token_embd.weight", {640, 64}, GgmlType::kF16), GgmlType::kF16);
}

TEST(GgufLlamaTest, Llama3RopeFactorsCoverTheThreeBands) {
  LlamaConfig c;
  c.head_dim = 64;
  c.rope_theta = 500000.0;
  EXPECT_TRUE(Llama3RopeFactors(c).empty());  // default rope: no tensor
  c.rope_scaling = {"llama3", 32.0, 1.0, 4.0, 8192};
  const std::vector<float> f = Llama3RopeFactors(c);
  ASSERT_EQ(f.size(), 32u);
  EXPECT_EQ(f.front(), 1.0f);  // the fastest frequency is kept
  EXPECT_EQ(f.back(), 32.0f);  // the slowest is divided by the factor
  // In between the blend 1 / ((1 - s) / factor + s) with s = (8192 / wavelength - 1) / 3.
  bool blended = false;
  for (int i = 0; i < 32; ++i) {
    const double freq = 1.0 / std::pow(500000.0, 2.0 * i / 64);
    const double wavelen = 2 * M_PI / freq;
    if (wavelen > 2048 && wavelen < 8192) {
      const double s = (8192 / wavelen - 1) / 3;
      EXPECT_NEAR(f[i], 1 / ((1 - s) / 32 + s), 1e-4 * f[i]) << i;
      blended = true;
    }
  }
  EXPECT_TRUE(blended);
}

}  // namespace
}  // namespace qlorad::trainer
