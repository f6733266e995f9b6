// Packing keeps documents apart: a row holding several documents gives each token the same loss
// as that document trained alone (block-diagonal causal attention, rotary positions restarting
// per document), here with the tiny model in fp32.
#include <gtest/gtest.h>

#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/batcher.h"
#include "worker/trainer/model_loader.h"
#include "worker/trainer/tiny_model.h"

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

TEST(PackingTest, PackedRowGivesEachDocumentsLossesAlone) {
  testing::TempDir dir;
  ASSERT_TRUE(MakeTinyModel(dir.path(), 11).ok());
  auto loaded = LoadLlamaModel(dir.path(), TinyLlamaConfig(), false, at::kCPU, at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  LlamaModel model = loaded->model;
  at::NoGradGuard no_grad;
  const std::vector<Document> docs = {
      {{256, 72, 105, 33, 257}, {256, 72, 105, 33, 257}},
      {{256, 87, 111, 114, 108, 100, 257}, {-100, -100, -100, 114, 108, 100, 257}},
      {{256, 79, 107, 257}, {256, 79, 107, 257}},
  };
  // One row holds all three: 4 + 6 + 3 (input, target) pairs.
  auto packed = Batcher::Create(docs, {13, true, false, 0});
  ASSERT_TRUE(packed.ok());
  ASSERT_EQ(packed->rows_per_epoch(), 1);
  const Batch row = packed->Next(1);
  ASSERT_TRUE(row.packed_documents);
  const at::Tensor got = RowLosses(model, row, true);

  std::vector<at::Tensor> alone;
  for (const Document& d : docs) {
    auto single = Batcher::Create({d}, {13, true, false, 0});
    ASSERT_TRUE(single.ok());
    alone.push_back(RowLosses(model, single->Next(1), false));
  }
  const at::Tensor want = at::cat(alone);
  ASSERT_EQ(got.sizes(), want.sizes());
  // fp32 against fp32 through the same kernels but a masked instead of a causal attention call.
  EXPECT_TRUE(at::allclose(got, want, /*rtol=*/0, /*atol=*/1e-5))
      << (got - want).abs().max().item<double>();
  // The same row without the document boundaries differs: the check above is not vacuous.
  const at::Tensor leaky = RowLosses(model, row, false);
  EXPECT_GT((leaky - want).abs().max().item<double>(), 1e-3);
}

}  // namespace
}  // namespace qlorad::trainer
