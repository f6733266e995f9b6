#include "worker/trainer/data/eval_batches.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/unit/trainer/data/test_documents.h"

namespace qlorad::trainer {
namespace {

Batcher MakeBatcher() {
  // 11 rows: batches of 3 rows leave a last one of 2.
  auto batcher = Batcher::Create(testing::VariedDocuments(11, 6, 3, 100),
                                 {.max_seq_len = 8, .packing = false, .shuffle = false});
  EXPECT_TRUE(batcher.ok());
  return *batcher;
}

int64_t Rows(const std::vector<EvalBatch>& batches) {
  int64_t rows = 0;
  for (const EvalBatch& b : batches) rows += b.counts ? b.batch.rows : 0;
  return rows;
}

TEST(EvalBatchesTest, OneRankEvaluatesEveryRowOnceInOrder) {
  Batcher batcher = MakeBatcher();
  const auto batches = DrawEvalBatches(batcher, {.micro_batch_size = 3});
  ASSERT_EQ(batches.size(), 4u);
  EXPECT_EQ(batches.back().batch.rows, 2);
  EXPECT_EQ(Rows(batches), 11);
  // The same batches next time: evaluations compare.
  const auto again = DrawEvalBatches(batcher, {.micro_batch_size = 3});
  for (size_t i = 0; i < batches.size(); ++i) {
    EXPECT_EQ(again[i].batch.inputs, batches[i].batch.inputs);
  }
}

TEST(EvalBatchesTest, RanksShareOneRanksBatchesAndRunAsManyForwards) {
  Batcher single = MakeBatcher();
  const auto all = DrawEvalBatches(single, {.micro_batch_size = 3});
  const int world = 3;  // 4 batches: rank 0 gets two, the others one and a filler
  int64_t valid = 0;
  for (int r = 0; r < world; ++r) {
    Batcher batcher = MakeBatcher();
    const auto mine =
        DrawEvalBatches(batcher, {.micro_batch_size = 3, .rank = r, .world_size = world});
    ASSERT_EQ(mine.size(), 2u) << "rank " << r;
    for (size_t i = 0; i < mine.size(); ++i) {
      const size_t global = i * world + static_cast<size_t>(r);
      EXPECT_EQ(mine[i].counts, global < all.size()) << "rank " << r << " batch " << i;
      if (mine[i].counts) {
        EXPECT_EQ(mine[i].batch.inputs, all[global].batch.inputs);
        valid += mine[i].batch.valid_labels;
      }
    }
  }
  int64_t want = 0;
  for (const EvalBatch& b : all) want += b.batch.valid_labels;
  EXPECT_EQ(valid, want);
}

TEST(EvalBatchesTest, EvalBatchesCapsTheSet) {
  Batcher batcher = MakeBatcher();
  const auto capped = DrawEvalBatches(batcher, {.micro_batch_size = 3, .max_batches = 2});
  EXPECT_EQ(capped.size(), 2u);
  EXPECT_EQ(Rows(capped), 6);
  const auto beyond = DrawEvalBatches(batcher, {.micro_batch_size = 3, .max_batches = 100});
  EXPECT_EQ(Rows(beyond), 11);
}

}  // namespace
}  // namespace qlorad::trainer
