// Packing keeps documents apart: a row holding several documents gives each token the same loss
// as that document trained alone (block-diagonal causal attention, rotary positions restarting
// per document), here with the tiny model in fp32.
#include <gtest/gtest.h>

#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/data/batcher.h"
#include "worker/trainer/model/model_loader.h"
#include "worker/trainer/model/tiny_model.h"

namespace qlorad::trainer {
namespace {

at::Tensor Ids(const std::vector<int64_t>& v, int64_t rows, int64_t cols) {
  return at::tensor(v, at::kLong).view({rows, cols});
}

// Per-token cross-entropy of one batch row [seq] (ignored targets give 0).
at::Tensor RowLosses(LlamaModel& model, const Batch& b, bool with_positions) {
  at::Tensor positions = with_positions ? Ids(b.positions, b.rows, b.seq_len) : at::Tensor();
  at::Tensor logits = model->Logits(model->forward(Ids(b.inputs, b.rows, b.seq_len), positions));
  return at::cross_entropy_loss(logits.view({-1, logits.size(-1)}),
                                Ids(b.labels, b.rows, b.seq_len).view({-1}), {},
                                at::Reduction::None, kIgnoreLabel);
}

const std::vector<Document> kDocs = {
    {{256, 72, 105, 33, 257}, {256, 72, 105, 33, 257}},
    {{256, 87, 111, 114, 108, 100, 257}, {-100, -100, -100, 114, 108, 100, 257}},
    {{256, 79, 107, 257}, {256, 79, 107, 257}},
};

// The tiny model in fp32 under `config` (TinyLlamaConfig, perhaps with sliding windows).
LlamaModel TinyModel(const testing::TempDir& dir, const LlamaConfig& config) {
  EXPECT_TRUE(MakeTinyModel(dir.path(), 11).ok());
  auto loaded = LoadLlamaModel(dir.path(), config, false, at::kCPU, at::kFloat);
  EXPECT_TRUE(loaded.ok()) << loaded.status().ToString();
  return loaded->model;
}

// kDocs packed into one row (4 + 6 + 3 (input, target) pairs).
Batch PackedRow() {
  auto packed = Batcher::Create(kDocs, {13, true, false, 0});
  EXPECT_TRUE(packed.ok());
  EXPECT_EQ(packed->rows_per_epoch(), 1);
  const Batch row = packed->Next(1);
  EXPECT_TRUE(row.packed_documents);
  return row;
}

// Each document of kDocs on its own, the per-token losses concatenated.
at::Tensor LossesAlone(LlamaModel& model) {
  std::vector<at::Tensor> alone;
  for (const Document& d : kDocs) {
    auto single = Batcher::Create({d}, {13, true, false, 0});
    EXPECT_TRUE(single.ok());
    alone.push_back(RowLosses(model, single->Next(1), false));
  }
  return at::cat(alone);
}

TEST(PackingTest, PackedRowGivesEachDocumentsLossesAlone) {
  testing::TempDir dir;
  LlamaModel model = TinyModel(dir, TinyLlamaConfig());
  at::NoGradGuard no_grad;
  const Batch row = PackedRow();
  const at::Tensor got = RowLosses(model, row, true);
  const at::Tensor want = LossesAlone(model);
  ASSERT_EQ(got.sizes(), want.sizes());
  // fp32 against fp32 through the same kernels but a masked instead of a causal attention call.
  EXPECT_TRUE(at::allclose(got, want, /*rtol=*/0, /*atol=*/1e-5))
      << (got - want).abs().max().item<double>();
  // The same row without the document boundaries differs: the check above is not vacuous.
  const at::Tensor leaky = RowLosses(model, row, false);
  EXPECT_GT((leaky - want).abs().max().item<double>(), 1e-3);
}

// Sliding windows narrower than a document, one layer windowed and one not (as Qwen2's
// max_window_layers gives): packed, each document still sees only its own last `window` keys.
TEST(PackingTest, PackedRowKeepsEachLayersSlidingWindow) {
  testing::TempDir dir;
  LlamaConfig config = TinyLlamaConfig();
  config.sliding_windows = {0, 3};
  LlamaModel model = TinyModel(dir, config);
  at::NoGradGuard no_grad;
  const at::Tensor got = RowLosses(model, PackedRow(), true);
  const at::Tensor want = LossesAlone(model);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(at::allclose(got, want, /*rtol=*/0, /*atol=*/1e-5))
      << (got - want).abs().max().item<double>();
  // The window matters for these documents: without it the losses differ.
  testing::TempDir full_dir;
  LlamaModel full = TinyModel(full_dir, TinyLlamaConfig());
  EXPECT_GT((LossesAlone(full) - want).abs().max().item<double>(), 1e-3);
}

}  // namespace
}  // namespace qlorad::trainer
