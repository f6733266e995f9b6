// Sharding math of worker/trainer/parallel, and the fsdp code path in a world of one (the local
// communicator) against the single-process trainer. Multi-process runs (Gloo, 2 and 4 ranks) are
// in tests/python/test_parallel_launch.py.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>

#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/io/safetensors.h"
#include "worker/trainer/model/tiny_model.h"
#include "worker/trainer/parallel/parallelize.h"
#include "worker/trainer/parallel/shard.h"
#include "worker/trainer/train/trainer.h"
#include "worker/trainer/weights/safetensors_torch.h"

namespace qlorad::trainer::parallel {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

// Every rank's shard, concatenated in rank order: what an all-gather returns.
at::Tensor GatherAll(const at::Tensor& tensor, const ShardSpec& spec, int world) {
  std::vector<at::Tensor> shards;
  for (int r = 0; r < world; ++r) shards.push_back(ShardOf(tensor, spec, r));
  return at::cat(shards);
}

TEST(ShardTest, DenseRowsRoundTripWithZeroPadding) {
  const at::Tensor w = at::randn({7, 5});
  for (int world = 1; world <= 4; ++world) {
    const ShardSpec spec = MakeShardSpec(w, 5, world);
    EXPECT_EQ(spec.rows, 7);
    EXPECT_EQ(spec.rows_per_rank, (7 + world - 1) / world);
    EXPECT_TRUE(at::equal(Unshard(GatherAll(w, spec, world), spec), w)) << world;
    // The last rank's padding rows are zeros.
    const at::Tensor last = ShardOf(w, spec, world - 1);
    const int64_t real = 7 * 5 - (world - 1) * spec.shard_numel();
    EXPECT_EQ(last.narrow(0, real, last.numel() - real).abs().sum().item<float>(), 0.0f);
  }
}

TEST(ShardTest, Nf4ShardsHoldWholeBlocksAndRoundTripExactly) {
  // 7 x 100 = 700 elements: 11 blocks of 64, the last one partial.
  const at::Tensor w = at::randn({7, 100});
  for (bool double_quant : {false, true}) {
    const ops::NF4Weight nf4 = ops::QuantizeNF4(w, 64, double_quant);
    const at::Tensor reference = ops::DequantizeNF4(nf4, at::kFloat);
    for (int world = 1; world <= 4; ++world) {
      const NF4Shards shards = MakeNF4Shards(nf4, world);
      EXPECT_EQ(shards.packed.unit, 32);  // one block's packed bytes
      EXPECT_EQ(shards.packed.rows, 11);
      EXPECT_EQ(shards.absmax.rows, 11);
      EXPECT_EQ(shards.packed.rows_per_rank, shards.absmax.rows_per_rank);
      std::vector<at::Tensor> packed, absmax;
      for (int r = 0; r < world; ++r) {
        auto [p, a] = NF4ShardOf(nf4, shards, r);
        EXPECT_EQ(p.numel(), shards.packed.rows_per_rank * 32);
        EXPECT_EQ(a.numel(), shards.packed.rows_per_rank);
        packed.push_back(p);
        absmax.push_back(a);
      }
      const ops::NF4Weight back = UnshardNF4(shards, at::cat(packed), at::cat(absmax));
      EXPECT_TRUE(at::equal(back.packed, nf4.packed)) << world << " " << double_quant;
      EXPECT_TRUE(at::equal(back.absmax, nf4.absmax)) << world << " " << double_quant;
      EXPECT_EQ(back.shape, nf4.shape);
      EXPECT_TRUE(at::equal(ops::DequantizeNF4(back, at::kFloat), reference));
    }
  }
}

TEST(StrategyTest, AutoShardsManyRanksAndSingleRefusesThem) {
  ParallelSpec spec;
  EXPECT_EQ(*ResolveStrategy(spec, 1), Strategy::kSingle);
  EXPECT_EQ(*ResolveStrategy(spec, 4), Strategy::kFsdp);
  spec.strategy = StrategyChoice::kDdp;
  EXPECT_EQ(*ResolveStrategy(spec, 2), Strategy::kDdp);
  spec.strategy = StrategyChoice::kSingle;
  EXPECT_EQ(*ResolveStrategy(spec, 1), Strategy::kSingle);
  EXPECT_THAT(ResolveStrategy(spec, 2).status().message(), HasSubstr("parallel.strategy"));
}

TEST(ParallelDimsTest, DegreesMustMultiplyToTheWorldSize) {
  const auto dims = ParallelDims::For(Strategy::kFsdp, 4);
  ASSERT_TRUE(dims.ok()) << dims.status().ToString();
  EXPECT_EQ(dims->shard, 4);
  EXPECT_EQ(dims->replicate, 1);
  EXPECT_EQ(ParallelDims::For(Strategy::kDdp, 3)->replicate, 3);
  EXPECT_EQ(ParallelDims::Create(2, 2, 4)->world_size(), 4);
  EXPECT_THAT(ParallelDims::Create(2, 2, 8).status().message(),
              HasSubstr("replicate 2 x shard 2 != world size 8"));
  EXPECT_THAT(ParallelDims::Create(0, 4, 4).status().message(), HasSubstr("at least 1"));
  // single is one rank: on two, its degrees (1 x 1) cannot make the world.
  EXPECT_THAT(ParallelDims::For(Strategy::kSingle, 2).status().message(),
              HasSubstr("!= world size 2"));
}

// The same through Parallelize's last step, which names the field.
TEST(ParallelDimsTest, SingleOnSeveralRanksIsRefusedNamingTheStrategy) {
  // Rank 0 of two; the refusal comes before any collective or any use of the model.
  struct TwoRanks : Communicator {
    int rank() const override { return 0; }
    int world_size() const override { return 2; }
    std::string backend() const override { return "none"; }
    std::unique_ptr<Work> AllGather(at::Tensor&, at::Tensor&) override { return nullptr; }
    std::unique_ptr<Work> ReduceScatterSum(at::Tensor&, at::Tensor&) override { return nullptr; }
    std::unique_ptr<Work> AllReduceSum(at::Tensor&) override { return nullptr; }
    std::unique_ptr<Work> Broadcast(at::Tensor&, int) override { return nullptr; }
    std::unique_ptr<Work> Barrier() override { return nullptr; }
  };
  LlamaModel model{nullptr};
  const auto refused =
      ApplyDataParallel(model, Strategy::kSingle, ParallelSpec{}, std::make_shared<TwoRanks>());
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("parallel.strategy: single on 2 ranks"));
}

// fsdp over a world of one runs every sharded path (gather, dequantize, no saved weight,
// reduce-scatter, global clip) with identity collectives: it must train like single.
// (quantization, reshard_after_forward, precision)
class FsdpWorldOfOneTest
    : public ::testing::TestWithParam<std::tuple<std::string, bool, std::string>> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    ASSERT_TRUE(MakeTinyModel(*dir_ / "model", 0).ok());
    std::ostringstream data;
    for (int i = 0; i < 16; ++i) data << "{\"text\": \"row " << i << " of the fsdp test set\"}\n";
    testing::WriteFile(*dir_ / "data.jsonl", data.str());
  }
  static void TearDownTestSuite() { delete dir_; }

  // `parallel_extra`: more keys for the parallel section (", cpu_offload: true").
  StatusOr<TrainResult> TryRun(const std::string& out, const std::string& strategy,
                               const std::string& parallel_extra = "") {
    const auto& [quantization, reshard, precision] = GetParam();
    // "bf16+lora": bf16 training whose adapters compute in bf16 (fsdp gathers them in bf16).
    const bool lora_in_train_precision = precision.ends_with("+lora");
    const std::string train_precision = precision.substr(0, precision.find('+'));
    const std::string lora_precision = lora_in_train_precision ? train_precision : "fp32";
    auto spec = ParseJobSpec(
        "name: fsdp1\nmodel: {path: " + *dir_ / "model" +
        "}\nquantization: {type: " + quantization +
        "}\nlora: {r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj, up_proj, "
        "down_proj], compute_precision: " +
        lora_precision + "}\n" + "data: {path: " + *dir_ / "data.jsonl" +
        ", max_seq_len: 16, seed: 2}\n" +
        "train: {max_steps: 4, micro_batch_size: 2, grad_accum: 2, lr: 2.0e-2, precision: " +
        train_precision + ", max_grad_norm: 0.5}\nresources: {device: cpu}\nparallel: {strategy: " +
        strategy + ", reshard_after_forward: " + (reshard ? "true" : "false") + parallel_extra +
        "}\ncheckpoint: {every_steps: 0, output_dir: " + out + "}\n");
    EXPECT_TRUE(spec.ok()) << spec.status().ToString();
    std::ostringstream events_out, events_err;
    EventSink events(true, events_out, events_err);
    return Train(*spec, {}, events);
  }
  TrainResult Run(const std::string& out, const std::string& strategy,
                  const std::string& parallel_extra = "") {
    auto result = TryRun(out, strategy, parallel_extra);
    EXPECT_TRUE(result.ok()) << result.status().ToString();
    return result.ok() ? *result : TrainResult{};
  }

  static TempDir* dir_;
};
TempDir* FsdpWorldOfOneTest::dir_ = nullptr;

TEST_P(FsdpWorldOfOneTest, TrainsLikeSingle) {
  TempDir out;
  // fsdp's layers take their weights from the shards, so their projections run module by module,
  // where the single run's fused projections sum the LoRA path in another order. Adam turns that
  // rounding into more than any relative tolerance in an element whose gradient is near zero
  // (an fp32 q_proj A element moved 2e-6 of 0.1 over 4 steps once the final norm was fused), so
  // both runs take the module path (QLORAD_FUSED=0), where fsdp of one must do the single run's
  // arithmetic exactly. The fused paths are tested against the modules in fused_projection_test
  // and fused_layers_test.
  setenv("QLORAD_FUSED", "0", 1);
  const TrainResult single = Run(out / "single", "single");
  const TrainResult fsdp = Run(out / "fsdp", "fsdp");
  unsetenv("QLORAD_FUSED");
  ASSERT_EQ(single.losses.size(), 4u);
  ASSERT_EQ(fsdp.losses.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(fsdp.losses[i], single.losses[i]) << "step " << i + 1;
  auto a = SafetensorsFile::Open(single.adapter_path + "/adapter_model.safetensors");
  auto b = SafetensorsFile::Open(fsdp.adapter_path + "/adapter_model.safetensors");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  for (const auto& info : a->tensors()) {
    const auto* other = b->Find(info.name);
    ASSERT_NE(other, nullptr) << info.name;
    const at::Tensor x = *ReadTensor(*a, info);
    const at::Tensor y = *ReadTensor(*b, *other);
    EXPECT_TRUE(at::equal(x, y)) << info.name << ": largest difference "
                                 << (x - y).abs().max().item<double>();
  }
}

// cpu_offload moves fsdp's sharded state from the GPU to host memory. A CPU run has it there
// already, so the offloaded path runs only on CUDA, and is tested there against resident fsdp
// (tests/gpu/test_gpu_memory.py: same losses, less GPU memory). Without sharded state (ddp,
// single) there is nothing to offload: an error naming the field.
TEST_P(FsdpWorldOfOneTest, CpuOffloadWithoutShardedStateIsRefused) {
  if (std::get<0>(GetParam()) != "nf4" || std::get<2>(GetParam()) != "fp32") GTEST_SKIP();
  TempDir out;
  for (const char* strategy : {"ddp", "single"}) {
    const auto refused = TryRun(out / strategy, strategy, ", cpu_offload: true");
    ASSERT_FALSE(refused.ok()) << strategy;
    EXPECT_THAT(refused.status().message(), HasSubstr("parallel.cpu_offload")) << strategy;
  }
}

INSTANTIATE_TEST_SUITE_P(Quantization, FsdpWorldOfOneTest,
                         ::testing::Combine(::testing::Values("none", "nf4"), ::testing::Bool(),
                                            ::testing::Values("fp32", "bf16", "bf16+lora")));

}  // namespace
}  // namespace qlorad::trainer::parallel
