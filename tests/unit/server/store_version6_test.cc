// The store's schema version 6: a job's retry_of (JobService.RetryJob) survives a restart, and a
// version-5 database is upgraded in place keeping its jobs, which retry nothing.
#include <gtest/gtest.h>

#include <string>

#include "server/store.h"
#include "tests/unit/server/schema_version.h"
#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

// A version-5 file: made by this store, then the column version 6 added dropped and the version
// put back, so its tables are exactly what version 5 created.
constexpr const char* kBackToVersion5 = R"sql(
ALTER TABLE jobs DROP COLUMN retry_of;
UPDATE schema_version SET version = 5;
)sql";

TEST(StoreVersion6Test, RetryOfIsStoredAndReadBack) {
  TempDir dir;
  const std::string db = dir.File("q.db");
  {
    auto store = Store::Open(db);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    JobRecord retry = MinimalJob("job-b");
    retry.job.set_retry_of("job-a");
    ASSERT_TRUE((*store)->InsertJob(retry).ok());
    ASSERT_TRUE((*store)->InsertJob(MinimalJob("job-c")).ok());
    // An update writes every column: it must not lose the link.
    retry.job.set_state(v1::JOB_STATE_COMPLETED);
    ASSERT_TRUE((*store)->UpdateJob(retry).ok());
  }
  auto reopened = Store::Open(db);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ((*reopened)->GetJob("job-b")->job.retry_of(), "job-a");
  EXPECT_EQ((*reopened)->GetJob("job-c")->job.retry_of(), "");
  auto listed = (*reopened)->ListJobSummaries({}, 10, std::nullopt);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 2u);
  for (const JobRecord& r : *listed) {
    EXPECT_EQ(r.job.retry_of(), r.job.id() == "job-b" ? "job-a" : "") << r.job.id();
  }
}

TEST(StoreVersion6Test, AVersion5DatabaseIsUpgradedKeepingItsJobs) {
  TempDir dir;
  const std::string db = dir.File("q.db");
  {
    auto made = Store::Open(db);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    JobRecord job = MinimalJob("old");
    job.job.set_owner("ada");
    job.last_checkpoint = "/runs/old/checkpoints/attempt-0/step-20";
    ASSERT_TRUE((*made)->InsertJob(job).ok());
  }
  ASSERT_TRUE((*Database::Open(db))->Exec(kBackToVersion5).ok());
  ASSERT_EQ(SchemaVersion(db), "5");

  auto store = Store::Open(db);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(SchemaVersion(db), std::to_string(Store::kSchemaVersion));
  auto old = (*store)->GetJob("old");
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->job.owner(), "ada");
  EXPECT_EQ(old->last_checkpoint, "/runs/old/checkpoints/attempt-0/step-20");
  EXPECT_EQ(old->job.retry_of(), "") << "jobs stored before retry nothing";
  JobRecord retry = MinimalJob("new");
  retry.job.set_retry_of("old");
  ASSERT_TRUE((*store)->InsertJob(retry).ok());
  EXPECT_EQ((*store)->GetJob("new")->job.retry_of(), "old");
}

}  // namespace
}  // namespace qlorad::server::testing
