#include "worker/trainer/data/validation_split.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "tests/unit/trainer/data/test_documents.h"

namespace qlorad::trainer {
namespace {

// A document's first id names it (VariedDocuments: id_stride * d).
std::vector<int64_t> Names(const std::vector<Document>& docs) {
  std::vector<int64_t> names;
  for (const Document& d : docs) names.push_back(d.input_ids[0] / 100);
  return names;
}

TEST(ValidationSplitTest, HoldsOutTheFractionAndKeepsEveryDocumentOnce) {
  auto split = SplitOffValidation(testing::VariedDocuments(40, 5, 2, 100), 0.25, 7);
  ASSERT_TRUE(split.ok()) << split.status().ToString();
  EXPECT_EQ(split->validation.size(), 10u);
  EXPECT_EQ(split->train.size(), 30u);
  std::vector<int64_t> train = Names(split->train);
  std::vector<int64_t> validation = Names(split->validation);
  // Each side keeps the file's order, and together they are the file.
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));
  EXPECT_TRUE(std::is_sorted(validation.begin(), validation.end()));
  std::set<int64_t> all(train.begin(), train.end());
  all.insert(validation.begin(), validation.end());
  EXPECT_EQ(all.size(), 40u);
  // Labels travel with their document.
  EXPECT_EQ(split->validation[0].labels.size(), split->validation[0].input_ids.size());
}

TEST(ValidationSplitTest, SameSeedSameSplitOtherSeedOtherSplit) {
  const auto docs = testing::VariedDocuments(50, 5, 2, 100);
  auto a = SplitOffValidation(docs, 0.2, 1);
  auto b = SplitOffValidation(docs, 0.2, 1);
  auto c = SplitOffValidation(docs, 0.2, 2);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(Names(a->validation), Names(b->validation));
  EXPECT_NE(Names(a->validation), Names(c->validation));
  // Not simply the first or last documents of the file.
  EXPECT_NE(Names(a->validation).front(), 0);
  EXPECT_NE(Names(a->validation).back(), 49);
}

TEST(ValidationSplitTest, AlwaysLeavesOneOnEachSide) {
  auto tiny = SplitOffValidation(testing::VariedDocuments(3, 5, 2, 100), 0.01, 0);
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(tiny->validation.size(), 1u);
  auto most = SplitOffValidation(testing::VariedDocuments(2, 5, 2, 100), 0.9, 0);
  ASSERT_TRUE(most.ok());
  EXPECT_EQ(most->train.size(), 1u);
  auto one = SplitOffValidation(testing::VariedDocuments(1, 5, 2, 100), 0.5, 0);
  ASSERT_FALSE(one.ok());
  EXPECT_EQ(
      one.status().message(),
      "data.validation: holding out a fraction needs at least 2 examples in data.path, got 1");
}

}  // namespace
}  // namespace qlorad::trainer
