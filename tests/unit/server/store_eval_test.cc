// The store's evaluation columns (schema version 2): eval loss and perplexity per step, NULL on
// steps that were not evaluated; the job's best evaluation; and a version-1 database, as
// coordinators before evaluation wrote it, migrated in place.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <utility>
#include <vector>

#include "server/store.h"
#include "tests/unit/server/store_version1.h"
#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

// A version-1 job and one of its steps (the tables: store_version1.h).
constexpr const char* kVersion1Rows = R"sql(
INSERT INTO jobs VALUES ('old', 'n', 3, 'name: n', 50, 0, 3, 'w', 1, 2, 3, 10, 10, 1.5, '',
                         '/a', 1, '', 0);
INSERT INTO metrics (job_id, attempt, rank, step, total_steps, loss, lr, grad_norm,
                     tokens_per_s, vram_allocated_bytes, vram_reserved_bytes, vram_peak_bytes,
                     wall_time_s)
  VALUES ('old', 0, 0, 10, 10, 1.5, 0.1, 0.2, 100, 0, 0, 0, 5);
)sql";

v1::StepMetrics Step(const std::string& job_id, int64_t step) {
  v1::StepMetrics m;
  m.set_job_id(job_id);
  m.set_step(step);
  m.set_loss(2.0);
  return m;
}

v1::StepMetrics Evaluated(const std::string& job_id, int64_t step, double eval_loss) {
  v1::StepMetrics m = Step(job_id, step);
  m.set_eval_loss(eval_loss);
  m.set_eval_perplexity(std::exp(eval_loss));
  return m;
}

TEST(StoreEvalTest, EvalLossIsStoredOnEvaluatedStepsOnly) {
  TempDir dir;
  auto store = Store::Open(dir.File("q.db"));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->InsertJob(MinimalJob("j")).ok());
  for (int64_t step = 1; step <= 4; ++step) {
    const v1::StepMetrics m = step % 2 == 0 ? Evaluated("j", step, 1.0 / step) : Step("j", step);
    ASSERT_TRUE((*store)->AppendMetrics(m).ok());
  }
  auto rows = (*store)->ReadMetrics("j", 0, 0, 100);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_FALSE((*rows)[0].value.has_eval_loss());
  EXPECT_FALSE((*rows)[0].value.has_eval_perplexity());
  ASSERT_TRUE((*rows)[1].value.has_eval_loss());
  EXPECT_DOUBLE_EQ((*rows)[1].value.eval_loss(), 0.5);
  EXPECT_DOUBLE_EQ((*rows)[1].value.eval_perplexity(), std::exp(0.5));

  auto curve = (*store)->ReadEvalLossCurve("j");
  ASSERT_TRUE(curve.ok());
  EXPECT_EQ(*curve, (std::vector<std::pair<int64_t, double>>{{2, 0.5}, {4, 0.25}}));
  auto latest = (*store)->LatestEvalPerJob();
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->at("j").step(), 4);
  // The newest step overall (4) is an evaluated one; /metrics' step series is unchanged.
  EXPECT_EQ((*store)->LatestMetricsPerJob()->at("j").step(), 4);
}

TEST(StoreEvalTest, TheBestEvaluationRoundTrips) {
  TempDir dir;
  auto store = Store::Open(dir.File("q.db"));
  ASSERT_TRUE(store.ok());
  JobRecord r = MinimalJob("j");
  ASSERT_TRUE((*store)->InsertJob(r).ok());
  EXPECT_FALSE((*store)->GetJob("j")->job.has_best());
  r.job.mutable_best()->set_step(40);
  r.job.mutable_best()->set_eval_loss(1.25);
  r.job.mutable_best()->set_checkpoint_path("/o/best/step-40");
  r.job.mutable_best()->set_adapter_path("/o/best/step-40/adapter");
  r.job.set_stopped_early(true);
  ASSERT_TRUE((*store)->UpdateJob(r).ok());
  const v1::Job got = (*store)->GetJob("j")->job;
  ASSERT_TRUE(got.has_best());
  EXPECT_EQ(got.best().step(), 40);
  EXPECT_DOUBLE_EQ(got.best().eval_loss(), 1.25);
  EXPECT_EQ(got.best().checkpoint_path(), "/o/best/step-40");
  EXPECT_EQ(got.best().adapter_path(), "/o/best/step-40/adapter");
  EXPECT_TRUE(got.stopped_early());
}

TEST(StoreEvalTest, AVersion1DatabaseIsMigratedAndKeepsItsRows) {
  TempDir dir;
  const std::string db = dir.File("q.db");
  ASSERT_TRUE((*Database::Open(db))->Exec(std::string(kVersion1Tables) + kVersion1Rows).ok());
  auto store = Store::Open(db);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto old = (*store)->GetJob("old");
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->job.adapter_path(), "/a");
  EXPECT_FALSE(old->job.has_best());
  auto rows = (*store)->ReadMetrics("old", 0, 0, 10);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_FALSE((*rows)[0].value.has_eval_loss());
  ASSERT_TRUE((*store)->AppendMetrics(Evaluated("old", 11, 0.75)).ok());
  EXPECT_EQ((*store)->ReadEvalLossCurve("old")->size(), 1u);
  store->reset();
  // Opening again finds the current version and changes nothing.
  auto again = Store::Open(db);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ((*again)->ReadMetrics("old", 0, 0, 10)->size(), 2u);
}

}  // namespace
}  // namespace qlorad::server::testing
