// FsdpFlatBuffer without a communicator: every rank's buffer is built here, their parts are
// concatenated in rank order (what an all-gather returns), and unpacking must give back the
// whole weights and LoRA tensors bit for bit. On 2 and 3 ranks neither the NF4 blocks nor the
// rows divide evenly, so each piece's padding must be dropped exactly once.
#include "worker/trainer/parallel/fsdp_flat_buffer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <tuple>
#include <vector>

#include "kernels/torch/nf4_ops.h"
#include "worker/trainer/parallel/shard.h"

namespace qlorad::trainer::parallel {
namespace {

// Same dtype, shape and bytes: at::equal alone would take -0.0 for 0.0.
::testing::AssertionResult BitwiseEqual(const at::Tensor& actual, const at::Tensor& expected) {
  if (actual.scalar_type() != expected.scalar_type() || actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << actual.scalar_type() << actual.sizes() << " vs "
                                         << expected.scalar_type() << expected.sizes();
  }
  const auto bytes = [](const at::Tensor& t) { return t.contiguous().view({-1}).view(at::kByte); };
  if (!at::equal(bytes(actual), bytes(expected))) {
    return ::testing::AssertionFailure() << "same shape and dtype, other bytes";
  }
  return ::testing::AssertionSuccess();
}

// One layer's worth of frozen weights and LoRA tensors, whole, as one process would hold them.
struct Layer {
  std::vector<ops::NF4Weight> nf4;  // projections 0 and 1
  at::Tensor dense;                 // projection 2
  std::vector<at::Tensor> lora;     // A then B of each projection, fp32
};

Layer MakeLayer() {
  torch::manual_seed(3);
  Layer layer;
  // 7 x 100 = 700 elements: 11 blocks of 64, the last one partial; plain fp32 absmax (4 bytes
  // each) and double-quantized uint8 codes (1 byte each, so odd byte counts).
  layer.nf4.push_back(ops::QuantizeNF4(at::randn({7, 100}), 64, /*double_quant=*/false));
  layer.nf4.push_back(ops::QuantizeNF4(at::randn({7, 100}), 64, /*double_quant=*/true));
  // Rows of 12 bytes: on 1, 2 and 3 ranks the frozen bytes end off a multiple of 8.
  layer.dense = at::randn({5, 6}).to(at::kHalf);
  for (const auto& [out, in] : {std::pair{7, 100}, std::pair{7, 100}, std::pair{5, 6}}) {
    // Values a bf16 gather carries exactly, so both gather dtypes must round trip bit for bit.
    layer.lora.push_back(at::randn({4, in}).to(at::kBFloat16).to(at::kFloat));
    layer.lora.push_back(at::randn({out, 4}).to(at::kBFloat16).to(at::kFloat));
  }
  return layer;
}

std::vector<ShardSpec> LoraSpecs(const Layer& layer, int world) {
  std::vector<ShardSpec> specs;
  for (const at::Tensor& full : layer.lora)
    specs.push_back(MakeShardSpec(full, full.size(1), world));
  return specs;
}

// Rank `rank`'s buffer, its LoRA shards packed in.
FsdpFlatBuffer RankBuffer(const Layer& layer, int rank, int world, at::ScalarType lora_dtype) {
  std::vector<FrozenShard> frozen;
  for (const ops::NF4Weight& nf4 : layer.nf4) frozen.push_back(ShardNF4Weight(nf4, rank, world));
  frozen.push_back(ShardDenseWeight(layer.dense, rank, world));
  const std::vector<ShardSpec> specs = LoraSpecs(layer, world);
  FsdpFlatBuffer buffer(std::move(frozen), specs, lora_dtype, at::TensorOptions());
  std::vector<at::Tensor> shards;
  for (size_t k = 0; k < specs.size(); ++k)
    shards.push_back(ShardOf(layer.lora[k], specs[k], rank));
  buffer.PackLora(shards);
  return buffer;
}

class FsdpFlatBufferTest
    : public ::testing::TestWithParam<std::tuple<int, at::ScalarType, FsdpGatherContents>> {};

TEST_P(FsdpFlatBufferTest, GatheredPartsUnpackToTheWholeTensorsBitForBit) {
  const auto [world, lora_dtype, contents] = GetParam();
  const Layer layer = MakeLayer();
  std::vector<FsdpFlatBuffer> buffers;
  std::vector<at::Tensor> parts;
  for (int rank = 0; rank < world; ++rank) {
    buffers.push_back(RankBuffer(layer, rank, world, lora_dtype));
    parts.push_back(buffers.back().Send(contents));
  }
  const FsdpByteLayout& layout = buffers.front().layout();
  EXPECT_EQ(layout.lora_offset % 8, 0);
  EXPECT_GT(layout.lora_offset, layout.frozen_bytes);  // the padding column is exercised
  EXPECT_EQ(parts.front().numel(), layout.size(contents));

  const FsdpUnsharded whole = buffers.front().Unpack(at::cat(parts), contents);
  if (contents == FsdpGatherContents::kLora) {
    EXPECT_TRUE(whole.weights.empty());
  } else {
    ASSERT_EQ(whole.weights.size(), 3u);
    for (size_t i = 0; i < layer.nf4.size(); ++i) {
      const ops::NF4Weight& expected = layer.nf4[i];
      ASSERT_TRUE(whole.weights[i].nf4.has_value()) << i;
      const ops::NF4Weight& nf4 = *whole.weights[i].nf4;
      EXPECT_TRUE(BitwiseEqual(nf4.packed, expected.packed)) << i;
      EXPECT_TRUE(BitwiseEqual(nf4.absmax, expected.absmax)) << i;
      EXPECT_EQ(nf4.shape, expected.shape);
      EXPECT_EQ(nf4.double_quant, expected.double_quant);
      EXPECT_TRUE(BitwiseEqual(ops::DequantizeNF4(nf4, at::kFloat),
                               ops::DequantizeNF4(expected, at::kFloat)))
          << i;
    }
    EXPECT_FALSE(whole.weights[2].nf4.has_value());
    EXPECT_TRUE(BitwiseEqual(whole.weights[2].dense, layer.dense));
  }
  if (contents == FsdpGatherContents::kFrozen) {
    EXPECT_TRUE(whole.lora.empty());
  } else {
    ASSERT_EQ(whole.lora.size(), layer.lora.size());
    for (size_t k = 0; k < layer.lora.size(); ++k) {
      EXPECT_TRUE(BitwiseEqual(whole.lora[k], layer.lora[k].to(lora_dtype))) << k;
      EXPECT_TRUE(BitwiseEqual(whole.lora[k].to(at::kFloat), layer.lora[k])) << k;
    }
  }
}

std::string ParamName(
    const ::testing::TestParamInfo<std::tuple<int, at::ScalarType, FsdpGatherContents>>& info) {
  const auto [world, dtype, contents] = info.param;
  const char* what = contents == FsdpGatherContents::kFrozen          ? "Frozen"
                     : contents == FsdpGatherContents::kFrozenAndLora ? "FrozenAndLora"
                                                                      : "Lora";
  return std::string(what) + (dtype == at::kFloat ? "Fp32" : "Bf16") + "World" +
         std::to_string(world);
}

INSTANTIATE_TEST_SUITE_P(RanksDtypesContents, FsdpFlatBufferTest,
                         ::testing::Combine(::testing::Values(1, 2, 3),
                                            ::testing::Values(at::kFloat, at::kBFloat16),
                                            ::testing::Values(FsdpGatherContents::kFrozen,
                                                              FsdpGatherContents::kFrozenAndLora,
                                                              FsdpGatherContents::kLora)),
                         ParamName);

// The optimizer steps the LoRA shards in place between gathers: each pack must carry the values
// of that moment, not those of the first.
TEST(FsdpFlatBufferRepackTest, EachPackCarriesTheShardsCurrentValues) {
  Layer layer = MakeLayer();
  FsdpFlatBuffer buffer = RankBuffer(layer, 0, 1, at::kFloat);
  std::vector<at::Tensor> shards;
  for (at::Tensor& full : layer.lora) {
    full.add_(1.0f);
    shards.push_back(full.reshape({-1}));  // a world of one: each shard is its tensor, flattened
  }
  buffer.PackLora(shards);
  const FsdpUnsharded whole =
      buffer.Unpack(buffer.Send(FsdpGatherContents::kLora), FsdpGatherContents::kLora);
  ASSERT_EQ(whole.lora.size(), layer.lora.size());
  for (size_t k = 0; k < layer.lora.size(); ++k) {
    EXPECT_TRUE(BitwiseEqual(whole.lora[k], layer.lora[k])) << k;
  }
}

}  // namespace
}  // namespace qlorad::trainer::parallel
