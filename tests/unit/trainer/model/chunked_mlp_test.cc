#include "worker/trainer/model/chunked_mlp.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/unit/trainer/model/lora_layer_maker.h"
#include "worker/trainer/model/fused_layers.h"

namespace qlorad::trainer {
namespace {

at::Generator Gen(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// gate, up [24 <- 16] and down [16 <- 24], each with an adapter whose B is not zero.
std::vector<QLoraLinear> MakeMlp(bool nf4) {
  std::vector<QLoraLinear> layers;
  uint64_t seed = 10;
  for (auto [out, in] : {std::pair{24, 16}, {24, 16}, {16, 24}}) {
    layers.push_back(testing::RandomLoraLayer(out, in, seed, at::kFloat, 0.5, 0.0, nf4));
    seed += 3;
  }
  return layers;
}

struct Result {
  at::Tensor y, dx;
  std::vector<at::Tensor> grads;  // A, then B, of gate, up, down
};

enum class Path { kModules, kChunked, kChunkedOutputUnused };

// y = down(silu(gate(x)) * up(x)) and the gradients from the upstream gradient dy.
Result RunMlp(const std::vector<QLoraLinear>& layers, const at::Tensor& x_in, const at::Tensor& dy,
              Path path, int64_t chunk_rows = 0) {
  for (const auto& layer : layers) {
    layer->lora_a().mutable_grad() = at::Tensor();
    layer->lora_b().mutable_grad() = at::Tensor();
  }
  at::Tensor x = x_in.detach().clone().requires_grad_(true);
  const FusedProjection gate_up({layers[0], layers[1]}), down({layers[2]});  // outlive the graph
  at::Tensor y;
  if (path == Path::kModules) {
    QLoraLinear gate = layers[0], up = layers[1], down_layer = layers[2];  // handles: non-const
    y = down_layer->forward(at::silu(gate->forward(x)) * up->forward(x));
  } else {
    y = ChunkedMlp(x, gate_up, down, path == Path::kChunkedOutputUnused, chunk_rows);
  }
  y.backward(dy);
  Result r{y.detach(), x.grad(), {}};
  for (const auto& layer : layers) {
    r.grads.push_back(layer->lora_a().grad());
    r.grads.push_back(layer->lora_b().grad());
  }
  return r;
}

class ChunkedMlpTest : public ::testing::TestWithParam<bool> {  // NF4 base weights or fp32
 protected:
  void SetUp() override {
    if (!FusedLayersAvailable(at::kCPU, at::kFloat) || (GetParam() && !Nf4OpsAvailable(at::kCPU))) {
      GTEST_SKIP() << "built without qlorad_ops";
    }
  }
  std::vector<QLoraLinear> layers_ = MakeMlp(GetParam());
  at::Tensor x_ = at::randn({2, 5, 16}, Gen(1));
  at::Tensor dy_ = at::randn({2, 5, 16}, Gen(2));
};

double MaxRelativeError(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor w = want.to(at::kDouble);
  return ((got.to(at::kDouble) - w).abs().max() / w.abs().max()).item<double>();
}

void ExpectClose(const Result& got, const Result& want, bool compare_y, const std::string& what) {
  // fp32: the same products, summed in another order (stacked GEMMs, the LoRA update inside the
  // addmm, the adapters' gradients summed over chunks): fp32 rounding of the largest values.
  constexpr double kTolerance = 1e-6;
  if (compare_y) {
    EXPECT_LT(MaxRelativeError(got.y, want.y), kTolerance) << what << ": y";
  }
  EXPECT_LT(MaxRelativeError(got.dx, want.dx), kTolerance) << what << ": dx";
  ASSERT_EQ(got.grads.size(), want.grads.size());
  for (size_t i = 0; i < got.grads.size(); ++i) {
    EXPECT_LT(MaxRelativeError(got.grads[i], want.grads[i]), kTolerance)
        << what << ": adapter gradient " << i;
  }
}

TEST_P(ChunkedMlpTest, EveryChunkingGivesTheModulesResultAndGradients) {
  const Result want = RunMlp(layers_, x_, dy_, Path::kModules);
  // 10 rows: one chunk; chunks of 3 (the last one short); one row each.
  for (int64_t chunk_rows : {0, 3, 1}) {
    const std::string what = "chunks of " + std::to_string(chunk_rows) + " rows";
    ExpectClose(RunMlp(layers_, x_, dy_, Path::kChunked, chunk_rows), want, true, what);
    ExpectClose(RunMlp(layers_, x_, dy_, Path::kChunkedOutputUnused, chunk_rows), want, false,
                what + ", output unused");
  }
}

INSTANTIATE_TEST_SUITE_P(BaseWeights, ChunkedMlpTest, ::testing::Bool(),
                         [](const auto& param_info) { return param_info.param ? "Nf4" : "Fp32"; });

TEST(ChunkedMlpTest, ChunksShareTheRowsEvenlyInWholeTiles) {
  // Llama-3.2-1B (I = 8192) in bf16, a 4 x 2048 batch: two chunks of 4096 rows.
  EXPECT_EQ(MlpChunkRows(8192, at::kBFloat16, 8192), 4096);
  // Llama-3.1-8B (I = 14336): 2048 tokens in one chunk; 32768 in eight of 4096; 10000 in three of
  // 3456 (whole 128-row tiles; the last chunk is the shorter one).
  EXPECT_EQ(MlpChunkRows(14336, at::kBFloat16, 2048), 2048);
  EXPECT_EQ(MlpChunkRows(14336, at::kBFloat16, 32768), 4096);
  EXPECT_EQ(MlpChunkRows(14336, at::kBFloat16, 10000), 3456);
  // Wide enough for 256 MiB to bind: 2 x 65536 x 2 bytes a row, 1024 of them.
  EXPECT_EQ(MlpChunkRows(65536, at::kBFloat16, 8192), 1024);
  // A few rows: one chunk, rounded up to a tile.
  EXPECT_EQ(MlpChunkRows(8192, at::kBFloat16, 10), 128);
}

}  // namespace
}  // namespace qlorad::trainer
