// The store's schema version 5: eval accuracy per step (task: classification), NULL on steps
// that were not evaluated; token expiry, NULL for never; and a version-4 database, as the
// coordinator with authentication wrote it, upgraded in place keeping its jobs, steps and tokens.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "server/store.h"
#include "tests/unit/server/schema_version.h"
#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

// A version-4 file: made by this store, then the columns versions 5 and 6 added dropped and the
// version put back, so its tables are exactly what version 4 created.
constexpr const char* kBackToVersion4 = R"sql(
ALTER TABLE jobs DROP COLUMN retry_of;
ALTER TABLE metrics DROP COLUMN eval_accuracy;
ALTER TABLE tokens DROP COLUMN expires_at;
UPDATE schema_version SET version = 4;
)sql";

// A step of job `job_id`; evaluated, with that accuracy, when one is given.
v1::StepMetrics StepOf(const std::string& job_id, int64_t step,
                       std::optional<double> accuracy = std::nullopt) {
  v1::StepMetrics m;
  m.set_job_id(job_id);
  m.set_step(step);
  m.set_loss(1.0);
  if (accuracy) {
    m.set_eval_loss(0.5);
    m.set_eval_accuracy(*accuracy);
  }
  return m;
}

TokenRecord UserToken(const std::string& id) {
  TokenRecord t;
  t.id = id;
  t.hash = "hash-" + id;
  t.role = "user";
  t.name = "ada";
  t.created_unix_ms = 1000;
  return t;
}

TEST(StoreVersion5Test, EvalAccuracyIsStoredOnEvaluatedStepsOnly) {
  TempDir dir;
  auto store = Store::Open(dir.File("q.db"));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->InsertJob(MinimalJob("j")).ok());
  ASSERT_TRUE((*store)->AppendMetrics(StepOf("j", 1)).ok());
  ASSERT_TRUE((*store)->AppendMetrics(StepOf("j", 2, 0.75)).ok());
  auto rows = (*store)->ReadMetrics("j", 0, 0, 10);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_FALSE((*rows)[0].value.has_eval_accuracy());
  ASSERT_TRUE((*rows)[1].value.has_eval_accuracy());
  EXPECT_DOUBLE_EQ((*rows)[1].value.eval_accuracy(), 0.75);
  EXPECT_DOUBLE_EQ((*store)->LatestEvalPerJob()->at("j").eval_accuracy(), 0.75);
}

TEST(StoreVersion5Test, AVersion4DatabaseIsUpgradedKeepingItsRows) {
  TempDir dir;
  const std::string db = dir.File("q.db");
  {
    auto made = Store::Open(db);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    JobRecord job = MinimalJob("old");
    job.job.set_owner("ada");
    ASSERT_TRUE((*made)->InsertJob(job).ok());
    ASSERT_TRUE((*made)->AppendMetrics(StepOf("old", 1)).ok());
    ASSERT_TRUE((*made)->InsertToken(UserToken("tok-old")).ok());
  }
  ASSERT_TRUE((*Database::Open(db))->Exec(kBackToVersion4).ok());
  ASSERT_EQ(SchemaVersion(db), "4");

  auto store = Store::Open(db);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(SchemaVersion(db), std::to_string(Store::kSchemaVersion));
  EXPECT_EQ((*store)->GetJob("old")->job.owner(), "ada");
  auto rows = (*store)->ReadMetrics("old", 0, 0, 10);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_FALSE((*rows)[0].value.has_eval_accuracy()) << "steps stored before: not evaluated";
  ASSERT_TRUE((*store)->AppendMetrics(StepOf("old", 2, 0.5)).ok());
  EXPECT_DOUBLE_EQ((*store)->ReadMetrics("old", 2, 0, 10)->at(0).value.eval_accuracy(), 0.5);
  auto tokens = (*store)->ListTokens();
  ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
  ASSERT_EQ(tokens->size(), 1u);
  EXPECT_EQ(tokens->front().name, "ada");
  EXPECT_FALSE(tokens->front().expires_unix_ms.has_value()) << "tokens made before never expire";
  TokenRecord expiring = UserToken("tok-new");
  expiring.expires_unix_ms = 5000;
  ASSERT_TRUE((*store)->InsertToken(expiring).ok());
  EXPECT_EQ((*store)->FindToken("hash-tok-new").value()->expires_unix_ms.value_or(-1), 5000);
}

}  // namespace
}  // namespace qlorad::server::testing
