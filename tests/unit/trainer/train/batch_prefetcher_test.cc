// The prefetcher must change when batches are drawn, never which: on the CPU (where no copy can be
// seen to overlap) its steps must be those of drawing inline, in order, across a resume too.
#include "worker/trainer/train/batch_prefetcher.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/unit/trainer/data/test_documents.h"
#include "worker/trainer/loss/chunked_loss.h"
#include "worker/trainer/model/attention.h"

namespace qlorad::trainer {
namespace {

Batcher MakeBatcher(bool packing) {
  auto batcher = Batcher::Create(testing::VariedDocuments(31, 11, 4, 7),
                                 {.max_seq_len = 8, .packing = packing, .seed = 5});
  EXPECT_TRUE(batcher.ok());
  return *batcher;
}

constexpr StepShape kShape{.micro_batch_size = 2, .grad_accum = 3, .rank = 1, .world_size = 2};

std::vector<int64_t> Values(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

// Every step is taken before any is compared: a buffer refilled while its step was still in use
// would show up as a later step's ids.
std::vector<DeviceStep> Prefetched(Batcher& batcher, int64_t first, int64_t end) {
  BatchPrefetcher prefetcher(batcher, kShape, at::kCPU, first, end);
  std::vector<DeviceStep> steps;
  for (int64_t step = first; step < end; ++step) {
    auto next = prefetcher.Next();
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    if (!next.ok()) break;
    steps.push_back(*next);
  }
  return steps;
}

void ExpectSameStep(const DeviceStep& got, const StepBatches& want, int64_t step) {
  SCOPED_TRACE("step " + std::to_string(step));
  EXPECT_EQ(got.global_valid, want.global_valid);
  EXPECT_EQ(got.global_tokens, want.global_tokens);
  EXPECT_EQ(got.after.epoch, want.after.epoch);
  EXPECT_EQ(got.after.row, want.after.row);
  ASSERT_EQ(got.micro_batches.size(), want.mine.size());
  for (size_t i = 0; i < want.mine.size(); ++i) {
    const DeviceMicroBatch& g = got.micro_batches[i];
    const Batch& w = want.mine[i];
    EXPECT_EQ(g.inputs.sizes().vec(), (std::vector<int64_t>{w.rows, w.seq_len}));
    EXPECT_EQ(Values(g.inputs), w.inputs) << "micro-batch " << i;
    EXPECT_EQ(Values(g.labels), w.labels) << "micro-batch " << i;
    EXPECT_EQ(g.positions.defined(), w.packed_documents);
    EXPECT_EQ(g.cu_seqlens.defined(), w.packed_documents);
    if (w.packed_documents) {
      EXPECT_EQ(Values(g.positions), w.positions) << "micro-batch " << i;
      // The batcher's host-side bounds are those the model would find on the device.
      ASSERT_EQ(g.cu_seqlens.scalar_type(), at::kInt);
      EXPECT_EQ(Values(g.cu_seqlens.to(at::kLong)),
                Values(DocumentOffsets(g.positions).to(at::kLong)))
          << "micro-batch " << i;
    }
    EXPECT_EQ(g.valid_labels, w.valid_labels);
  }
}

// Well past one epoch (31 documents, 12 rows a step), so the epoch boundary is crossed too.
constexpr int64_t kSteps = 9;

TEST(BatchPrefetcherTest, YieldsTheStepsOfTheInlineDrawInOrder) {
  for (const bool packing : {true, false}) {
    SCOPED_TRACE(packing ? "packed" : "padded");
    Batcher inline_draw = MakeBatcher(packing);
    Batcher batcher = MakeBatcher(packing);
    const std::vector<DeviceStep> steps = Prefetched(batcher, 0, kSteps);
    ASSERT_EQ(steps.size(), static_cast<size_t>(kSteps));
    bool saw_packed = false;
    for (int64_t step = 0; step < kSteps; ++step) {
      const StepBatches want = DrawStepBatches(inline_draw, kShape);
      for (const Batch& b : want.mine) saw_packed = saw_packed || b.packed_documents;
      ExpectSameStep(steps[step], want, step);
    }
    EXPECT_EQ(saw_packed, packing);  // both layouts of the step buffer were exercised
  }
}

TEST(BatchPrefetcherTest, ResumingAtAStepsPositionContinuesTheSameSteps) {
  Batcher inline_draw = MakeBatcher(true);
  std::vector<StepBatches> want;
  for (int64_t step = 0; step < kSteps; ++step)
    want.push_back(DrawStepBatches(inline_draw, kShape));

  // A run stopped after 4 steps records the position after step 4 (the batcher itself has been
  // drawn further by then); a new run seeks there and starts at step 5.
  Batcher first = MakeBatcher(true);
  const std::vector<DeviceStep> before = Prefetched(first, 0, 4);
  ASSERT_EQ(before.size(), 4u);
  Batcher resumed = MakeBatcher(true);
  resumed.Seek(before.back().after);
  const std::vector<DeviceStep> after = Prefetched(resumed, 4, kSteps);
  ASSERT_EQ(after.size(), static_cast<size_t>(kSteps - 4));
  for (int64_t step = 0; step < kSteps; ++step) {
    ExpectSameStep(step < 4 ? before[step] : after[step - 4], want[step], step);
  }
}

TEST(BatchPrefetcherTest, PastTheLastStepIsAnError) {
  Batcher batcher = MakeBatcher(true);
  BatchPrefetcher prefetcher(batcher, kShape, at::kCPU, 3, 4);
  ASSERT_TRUE(prefetcher.Next().ok());
  const auto past = prefetcher.Next();
  ASSERT_FALSE(past.ok());
  EXPECT_NE(past.status().message().find("no step 5"), std::string::npos)
      << past.status().message();
}

TEST(BatchPrefetcherTest, StoppingEarlyEndsTheThread) {
  Batcher batcher = MakeBatcher(true);
  { BatchPrefetcher unused(batcher, kShape, at::kCPU, 0, 1000); }  // must not hang or draw on
  BatchPrefetcher prefetcher(batcher, kShape, at::kCPU, 0, 1);
  EXPECT_TRUE(prefetcher.Next().ok());  // the batcher is usable again
}

// The loss divides by valid-label counts taken from the host-side batch; they must be what a
// device reduction over the copied labels gives, and so give the same mean loss.
TEST(BatchPrefetcherTest, HostValidLabelCountsEqualTheDeviceCount) {
  Batcher batcher = MakeBatcher(true);
  const std::vector<DeviceStep> steps = Prefetched(batcher, 0, 3);
  at::manual_seed(0);
  const at::Tensor weight = at::randn({7 * 31 + 12, 16}, at::kDouble);
  for (const DeviceStep& step : steps) {
    int64_t mine = 0;
    for (const DeviceMicroBatch& b : step.micro_batches) {
      const at::Tensor hidden = at::randn({b.labels.size(0), 16}, at::kDouble);
      const LinearCrossEntropy loss = ChunkedCrossEntropy(hidden, weight, b.labels, {}, 5);
      const int64_t on_device = loss.valid_tokens().item<int64_t>();
      EXPECT_EQ(b.valid_labels, on_device);
      EXPECT_GT(on_device, 0);
      EXPECT_EQ((loss.sum / static_cast<double>(b.valid_labels)).item<double>(),
                (loss.sum / loss.valid_tokens()).item<double>());
      mine += b.valid_labels;
    }
    // Two ranks: this one's micro-batches hold part of the step's valid labels, never more.
    EXPECT_GT(step.global_valid, mine);
  }
}

}  // namespace
}  // namespace qlorad::trainer
