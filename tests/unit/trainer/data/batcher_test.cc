#include "worker/trainer/data/batcher.h"

#include <gtest/gtest.h>

#include <numeric>

namespace qlorad::trainer {
namespace {

Document Doc(std::vector<int64_t> ids) {
  return {ids, ids};
}

TEST(BatcherTest, PackingKeepsDocumentBoundaries) {
  auto batcher = Batcher::Create({Doc({1, 2, 3}), Doc({4, 5, 6, 7})}, {3, true, false, 0});
  ASSERT_TRUE(batcher.ok());
  // (input, target) pairs stay inside a document: 1->2, 2->3 | 4->5, 5->6, 6->7 (3 predicts
  // nothing), cut into rows of 3; positions restart where a document starts.
  EXPECT_EQ(batcher->rows_per_epoch(), 2);
  Batch b = batcher->Next(2);
  EXPECT_EQ(b.seq_len, 3);
  EXPECT_EQ(b.inputs, (std::vector<int64_t>{1, 2, 4, 5, 6, 0}));
  EXPECT_EQ(b.labels, (std::vector<int64_t>{2, 3, 5, 6, 7, kIgnoreLabel}));
  EXPECT_EQ(b.positions, (std::vector<int64_t>{0, 1, 0, 0, 1, 2}));
  EXPECT_TRUE(b.packed_documents);
  // Documents start at tokens 0, 2 and 3 (the second row starts with the rest of [4..7]).
  EXPECT_EQ(b.document_offsets, (std::vector<int64_t>{0, 2, 3, 6}));
  EXPECT_EQ(b.valid_labels, 5);
  EXPECT_EQ(b.tokens, 5);
}

TEST(BatcherTest, PackingKeepsUserLabelsAligned) {
  Document d{{10, 11, 12, 13}, {kIgnoreLabel, kIgnoreLabel, 12, 13}};
  auto batcher = Batcher::Create({d}, {8, true, false, 0});
  ASSERT_TRUE(batcher.ok());
  Batch b = batcher->Next(1);
  EXPECT_EQ(b.inputs, (std::vector<int64_t>{10, 11, 12}));
  EXPECT_EQ(b.labels, (std::vector<int64_t>{kIgnoreLabel, 12, 13}));
  EXPECT_EQ(b.positions, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_FALSE(b.packed_documents);
  EXPECT_TRUE(b.document_offsets.empty());
  EXPECT_EQ(b.valid_labels, 2);
}

TEST(BatcherTest, WithoutPackingPadsAndTruncatesRows) {
  auto batcher = Batcher::Create({Doc({1, 2}), Doc({3, 4, 5, 6, 7, 8})}, {4, false, false, 0});
  ASSERT_TRUE(batcher.ok());
  Batch b = batcher->Next(2);
  EXPECT_EQ(b.seq_len, 4);
  EXPECT_EQ(b.inputs, (std::vector<int64_t>{1, 0, 0, 0, 3, 4, 5, 6}));
  EXPECT_EQ(b.labels,
            (std::vector<int64_t>{2, kIgnoreLabel, kIgnoreLabel, kIgnoreLabel, 4, 5, 6, 7}));
  // Padding continues the row's document, which causal attention already keeps out of the way.
  EXPECT_EQ(b.positions, (std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 3}));
  EXPECT_FALSE(b.packed_documents);
  EXPECT_EQ(b.tokens, 5);
  EXPECT_EQ(b.valid_labels, 5);
}

TEST(BatcherTest, ShuffleDependsOnlyOnSeedAndEpochsDiffer) {
  std::vector<Document> docs;
  for (int64_t i = 0; i < 20; ++i) docs.push_back(Doc({i, i + 100}));
  auto order = [&](uint64_t seed) {
    auto b = Batcher::Create(docs, {4, false, true, seed});
    std::vector<int64_t> first;
    for (int i = 0; i < 40; ++i) first.push_back(b->Next(1).inputs[0]);
    return first;
  };
  const auto a = order(7);
  EXPECT_EQ(a, order(7));
  EXPECT_NE(a, order(8));
  // Each epoch is a permutation of all documents, and the two epochs differ.
  std::vector<int64_t> e0(a.begin(), a.begin() + 20), e1(a.begin() + 20, a.end());
  EXPECT_NE(e0, e1);
  std::sort(e0.begin(), e0.end());
  std::vector<int64_t> all(20);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(e0, all);
}

TEST(BatcherTest, SeekResumesTheSameStream) {
  std::vector<Document> docs;
  for (int64_t i = 0; i < 7; ++i) docs.push_back(Doc({i, i, i}));
  auto a = Batcher::Create(docs, {2, true, true, 3});
  for (int i = 0; i < 6; ++i) a->Next(2);  // 7 rows per epoch: crosses into epoch 1
  const DataPosition pos = a->position();
  EXPECT_EQ(pos.epoch, 1);
  auto b = Batcher::Create(docs, {2, true, true, 3});
  b->Seek(pos);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a->Next(2).inputs, b->Next(2).inputs);
}

TEST(BatcherTest, NothingToPredictIsAnError) {
  auto batcher = Batcher::Create({Doc({1}), Doc({2})}, {4, false, false, 0});
  ASSERT_FALSE(batcher.ok());
  EXPECT_NE(batcher.status().message().find("data.path"), std::string::npos);
}

}  // namespace
}  // namespace qlorad::trainer
