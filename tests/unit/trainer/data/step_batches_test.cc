#include "worker/trainer/data/step_batches.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/unit/trainer/data/test_documents.h"

namespace qlorad::trainer {
namespace {

Batcher MakeBatcher() {
  auto batcher = Batcher::Create(testing::VariedDocuments(23, 8, 3, 100),
                                 {.max_seq_len = 6, .packing = false, .seed = 4});
  EXPECT_TRUE(batcher.ok());
  return *batcher;
}

TEST(StepBatchesTest, RanksSplitTheRowsOfOneRankAndAgreeOnTheCounts) {
  const int world = 3;
  const int64_t accum = 2;
  Batcher single = MakeBatcher();
  std::vector<Batcher> ranks(world, MakeBatcher());
  for (int step = 0; step < 5; ++step) {
    std::vector<StepBatches> mine;
    for (int r = 0; r < world; ++r) {
      mine.push_back(DrawStepBatches(
          ranks[r], {.micro_batch_size = 2, .grad_accum = accum, .rank = r, .world_size = world}));
    }
    // One rank drawing the whole global batch as its micro-batches, in order.
    const StepBatches all = DrawStepBatches(
        single, {.micro_batch_size = 2, .grad_accum = accum * world, .rank = 0, .world_size = 1});
    for (int r = 0; r < world; ++r) {
      ASSERT_EQ(mine[r].mine.size(), static_cast<size_t>(accum));
      for (int64_t i = 0; i < accum; ++i) {
        const Batch& got = mine[r].mine[i];
        const Batch& want = all.mine[i * world + r];
        EXPECT_EQ(got.inputs, want.inputs) << "step " << step << " rank " << r << " micro " << i;
        EXPECT_EQ(got.labels, want.labels);
      }
      EXPECT_EQ(mine[r].global_valid, all.global_valid);
      EXPECT_EQ(mine[r].global_tokens, all.global_tokens);
      EXPECT_EQ(mine[r].after.epoch, all.after.epoch);
      EXPECT_EQ(mine[r].after.row, all.after.row);
    }
  }
}

TEST(StepBatchesTest, AfterIsWhereTheNextStepStarts) {
  Batcher batcher = MakeBatcher();
  const StepShape shape{.micro_batch_size = 3, .grad_accum = 2};
  const StepBatches first = DrawStepBatches(batcher, shape);
  const StepBatches second = DrawStepBatches(batcher, shape);
  Batcher resumed = MakeBatcher();
  resumed.Seek(first.after);
  const StepBatches again = DrawStepBatches(resumed, shape);
  ASSERT_EQ(again.mine.size(), second.mine.size());
  for (size_t i = 0; i < again.mine.size(); ++i) {
    EXPECT_EQ(again.mine[i].inputs, second.mine[i].inputs);
  }
  int64_t valid = 0;
  for (const Batch& b : first.mine) valid += b.valid_labels;
  EXPECT_EQ(first.global_valid, valid);  // a world of one: its own micro-batches
}

}  // namespace
}  // namespace qlorad::trainer
