// Cutting a micro-batch into pieces of rows (a step retried after running out of memory): each
// piece is its rows' ids, labels and positions, with the document bounds the model would find in
// those positions, cut on the host.
#include "worker/trainer/train/micro_batch_rows.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/unit/trainer/data/test_documents.h"
#include "worker/trainer/model/attention.h"

namespace qlorad::trainer {
namespace {

std::vector<int64_t> Values(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

// One step of 5 rows, packed or not, as the prefetcher hands it over (on the CPU).
DeviceMicroBatch MicroBatch(bool packing) {
  auto batcher = Batcher::Create(testing::VariedDocuments(31, 11, 4, 7),
                                 {.max_seq_len = 8, .packing = packing, .seed = 5});
  EXPECT_TRUE(batcher.ok());
  BatchPrefetcher prefetcher(*batcher, {.micro_batch_size = 5}, at::kCPU, 0, 1);
  auto step = prefetcher.Next();
  EXPECT_TRUE(step.ok()) << step.status().ToString();
  return step->micro_batches.at(0);
}

TEST(MicroBatchRowsTest, PiecesHoldTheirRowsAndTheBoundsOfTheirDocuments) {
  for (const bool packing : {true, false}) {
    SCOPED_TRACE(packing ? "packed" : "padded");
    const DeviceMicroBatch whole = MicroBatch(packing);
    ASSERT_EQ(whole.positions.defined(), packing);
    const int64_t seq_len = whole.inputs.size(1);
    std::vector<int64_t> inputs, labels, positions;
    for (const auto& [begin, rows] :
         std::vector<std::pair<int64_t, int64_t>>{{0, 2}, {2, 2}, {4, 1}}) {
      const ForwardRows piece = RowsOf(whole, begin, rows);
      EXPECT_EQ(piece.inputs.sizes().vec(), (std::vector<int64_t>{rows, seq_len}));
      EXPECT_EQ(piece.labels.numel(), rows * seq_len);
      for (int64_t v : Values(piece.inputs)) inputs.push_back(v);
      for (int64_t v : Values(piece.labels)) labels.push_back(v);
      ASSERT_EQ(piece.positions.defined(), packing);
      ASSERT_EQ(piece.cu_seqlens.defined(), packing);
      if (!packing) continue;
      for (int64_t v : Values(piece.positions)) positions.push_back(v);
      EXPECT_EQ(piece.cu_seqlens.scalar_type(), at::kInt);
      EXPECT_EQ(Values(piece.cu_seqlens), Values(DocumentOffsets(piece.positions)))
          << "rows " << begin << ".." << begin + rows;
    }
    // Together the pieces are the micro-batch, in order.
    EXPECT_EQ(inputs, Values(whole.inputs));
    EXPECT_EQ(labels, Values(whole.labels));
    if (packing) {
      EXPECT_EQ(positions, Values(whole.positions));
    }
  }
}

TEST(MicroBatchRowsTest, AllTheRowsAreTheMicroBatchItself) {
  const DeviceMicroBatch whole = MicroBatch(true);
  const ForwardRows all = RowsOf(whole, 0, 5);
  EXPECT_TRUE(all.inputs.is_same(whole.inputs));
  EXPECT_TRUE(all.cu_seqlens.is_same(whole.cu_seqlens));
  EXPECT_THROW(RowsOf(whole, 4, 2), c10::Error);
}

}  // namespace
}  // namespace qlorad::trainer
