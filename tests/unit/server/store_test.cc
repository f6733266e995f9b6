// The SQLite store on real files: round trips, durability across reopen, transactions that
// roll back whole, and refusal of what it must not accept.
#include "server/store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/server/store_version1.h"
#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;

JobRecord SampleJob(const std::string& id) {
  JobRecord r;
  r.job.set_id(id);
  r.job.set_name("alpaca");
  r.job.set_state(v1::JOB_STATE_RUNNING);
  r.job.set_spec_yaml("name: alpaca\n");
  r.job.set_priority(70);
  r.job.set_attempt(2);
  r.job.set_max_restarts(3);
  r.job.set_worker_id("worker-1");
  r.job.set_created_unix_ms(1000);
  r.job.set_started_unix_ms(2000);
  r.job.set_last_step(17);
  r.job.set_total_steps(100);
  r.job.set_last_loss(1.2345678901234);
  r.job.set_error("");
  r.job.set_adapter_path("/runs/a");
  r.job.set_gpus(2);
  r.last_checkpoint = "/ck/17";
  r.cancel_requested = true;
  r.job.set_restarts(1);
  return r;
}

v1::StepMetrics SampleMetrics(const std::string& job_id, int64_t step) {
  v1::StepMetrics m;
  m.set_job_id(job_id);
  m.set_rank(0);
  m.set_attempt(1);
  m.set_step(step);
  m.set_total_steps(100);
  m.set_loss(3.0 / static_cast<double>(step));
  m.set_lr(2e-4);
  m.set_grad_norm(0.5);
  m.set_tokens_per_s(12345.5);
  m.set_vram_allocated_bytes(int64_t{1} << 33);
  m.set_vram_reserved_bytes(int64_t{1} << 34);
  m.set_vram_peak_bytes(int64_t{3} << 32);
  m.set_wall_time_s(1.5 * static_cast<double>(step));
  return m;
}

v1::LogLine SampleLog(const std::string& job_id, const std::string& message) {
  v1::LogLine l;
  l.set_job_id(job_id);
  l.set_level("info");
  l.set_message(message);
  l.set_source("trainer");
  l.set_unix_ms(42);
  return l;
}

std::unique_ptr<Store> OpenStore(const std::string& path) {
  auto store = Store::Open(path);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return std::move(store).value();
}

TEST(StoreTest, EverythingWrittenSurvivesReopen) {
  TempDir dir;
  const std::string db = dir.File("q.db");
  const JobRecord job = SampleJob("job-1");
  {
    auto store = OpenStore(db);
    ASSERT_TRUE(store->InsertJob(job).ok());
    for (int step = 1; step <= 3; ++step)
      ASSERT_TRUE(store->AppendMetrics(SampleMetrics("job-1", step)).ok());
    ASSERT_TRUE(store->AppendLog(SampleLog("job-1", "a")).ok());
    ASSERT_TRUE(store->AppendLog(SampleLog("job-1", "b")).ok());
    ASSERT_TRUE(
        store->UpsertWorker({"worker-1", "host-gpu0", "h", "cuda:0 H100", "0.1", 5, true}).ok());
  }
  auto store = OpenStore(db);
  auto got = store->GetJob("job-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->job.SerializeAsString(), job.job.SerializeAsString());
  EXPECT_EQ(got->last_checkpoint, "/ck/17");
  EXPECT_TRUE(got->cancel_requested);

  auto metrics = store->ReadMetrics("job-1", 0, 0, 100);
  ASSERT_TRUE(metrics.ok());
  ASSERT_EQ(metrics->size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ((*metrics)[i].value.SerializeAsString(),
              SampleMetrics("job-1", i + 1).SerializeAsString());
  }
  auto logs = store->ReadLogs("job-1", 0, 100);
  ASSERT_TRUE(logs.ok());
  ASSERT_EQ(logs->size(), 2u);
  EXPECT_EQ((*logs)[0].value.seq(), 1);
  EXPECT_EQ((*logs)[1].value.seq(), 2);
  EXPECT_EQ((*logs)[1].value.message(), "b");
  auto workers = store->ListWorkers();
  ASSERT_TRUE(workers.ok());
  ASSERT_EQ(workers->size(), 1u);
  EXPECT_EQ((*workers)[0].devices, "cuda:0 H100");
  // Seqs continue after a reopen instead of restarting at 1.
  auto third = store->AppendLog(SampleLog("job-1", "c"));
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->seq(), 3);
}

TEST(StoreTest, ReadMetricsFiltersByStepAndResumesAfterCursor) {
  TempDir dir;
  auto store = OpenStore(dir.File("q.db"));
  ASSERT_TRUE(store->InsertJob(SampleJob("job-1")).ok());
  ASSERT_TRUE(store->InsertJob(SampleJob("job-2")).ok());
  for (int step = 1; step <= 10; ++step) {
    ASSERT_TRUE(store->AppendMetrics(SampleMetrics("job-1", step)).ok());
    ASSERT_TRUE(store->AppendMetrics(SampleMetrics("job-2", step)).ok());
  }
  auto page = store->ReadMetrics("job-1", /*from_step=*/4, /*after_cursor=*/0, /*limit=*/3);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 3u);
  EXPECT_EQ((*page)[0].value.step(), 4);
  EXPECT_EQ((*page)[2].value.step(), 6);
  auto next = store->ReadMetrics("job-1", 4, page->back().cursor, 100);
  ASSERT_TRUE(next.ok());
  ASSERT_EQ(next->size(), 4u);
  EXPECT_EQ((*next)[0].value.step(), 7);
  for (const auto& row : *next) EXPECT_EQ(row.value.job_id(), "job-1");
}

// What another connection to the file reads: the first column of the first row.
std::string QueryOtherConnection(const std::string& db, const std::string& sql) {
  auto conn = Database::Open(db);
  EXPECT_TRUE(conn.ok());
  auto stmt = (*conn)->Prepare(sql);
  EXPECT_TRUE(stmt.ok()) << stmt.status().ToString();
  auto row = (*stmt)->Step();
  EXPECT_TRUE(row.ok() && *row) << sql;
  return (*stmt)->Text(0);
}

TEST(StoreTest, UsesWalAndRecordsTheSchemaVersion) {
  TempDir dir;
  const std::string db = dir.File("q.db");
  OpenStore(db);
  EXPECT_EQ(QueryOtherConnection(db, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(QueryOtherConnection(db, "SELECT MAX(version) FROM schema_version"),
            std::to_string(Store::kSchemaVersion));
}

TEST(StoreTest, RefusesADatabaseFromANewerQlorad) {
  TempDir dir;
  const std::string db = dir.File("q.db");
  OpenStore(db);
  ASSERT_TRUE((*Database::Open(db))->Exec("INSERT INTO schema_version VALUES (99)").ok());
  auto store = Store::Open(db);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("schema version 99"));
}

TEST(StoreTest, ADatabaseOfSchemaVersion1IsUpgradedKeepingItsJobs) {
  TempDir dir;
  const std::string db = dir.File("q.db");
  {
    // The tables as version 1 wrote them: no restarts column.
    auto old = Database::Open(db);
    ASSERT_TRUE(old.ok());
    ASSERT_TRUE((*old)
                    ->Exec(std::string(kVersion1Tables) +
                           "INSERT INTO jobs VALUES ('job-old', 'old', 2, 'name: old', 50, 2, 3, "
                           "'w', 1, 2, 0, 7, 10, 0.5, '', '', 1, '/ck/7', 0);")
                    .ok());
  }
  auto store = OpenStore(db);
  auto old = store->GetJob("job-old");
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->job.attempt(), 2);
  EXPECT_EQ(old->job.restarts(), 0) << "unknown for old jobs: none counted";
  EXPECT_EQ(old->job.owner(), "") << "no owner before version 4: admins only";
  EXPECT_TRUE(store->ListTokens().ok()) << "version 4's tokens table (and 5's expiry) exists";
  ASSERT_TRUE(store->InsertJob(SampleJob("job-new")).ok());
  EXPECT_EQ(store->GetJob("job-new")->job.restarts(), 1);
  EXPECT_EQ(QueryOtherConnection(db, "SELECT MAX(version) FROM schema_version"),
            std::to_string(Store::kSchemaVersion));
}

TEST(StoreTest, DuplicateIdIsRefusedAndTheStoredJobKept) {
  TempDir dir;
  auto store = OpenStore(dir.File("q.db"));
  ASSERT_TRUE(store->InsertJob(SampleJob("job-1")).ok());
  JobRecord other = SampleJob("job-1");
  other.job.set_name("impostor");
  Status status = store->InsertJob(other);
  EXPECT_EQ(status.code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(store->GetJob("job-1")->job.name(), "alpaca");
}

TEST(StoreTest, UnknownJobsAreNotFound) {
  TempDir dir;
  auto store = OpenStore(dir.File("q.db"));
  EXPECT_EQ(store->GetJob("job-x").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->UpdateJob(SampleJob("job-x")).code(), StatusCode::kNotFound);
  // Metrics and logs must belong to a stored job.
  EXPECT_FALSE(store->AppendMetrics(SampleMetrics("job-x", 1)).ok());
  EXPECT_FALSE(store->AppendLog(SampleLog("job-x", "orphan")).ok());
}

TEST(StoreTest, AFailedTransactionLeavesNothingBehind) {
  TempDir dir;
  auto store = OpenStore(dir.File("q.db"));
  ASSERT_TRUE(store->InsertJob(SampleJob("job-1")).ok());
  ASSERT_TRUE(store->AppendMetrics(SampleMetrics("job-1", 1)).ok());
  Status status = store->Transaction([&]() -> Status {
    JobRecord changed = SampleJob("job-1");
    changed.job.set_state(v1::JOB_STATE_FAILED);
    if (Status s = store->UpdateJob(changed); !s.ok()) return s;
    if (auto m = store->AppendMetrics(SampleMetrics("job-1", 2)); !m.ok()) return m.status();
    if (auto l = store->AppendLog(SampleLog("job-1", "x")); !l.ok()) return l.status();
    return store->AppendMetrics(SampleMetrics("job-unknown", 3)).status();  // fails
  });
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(store->GetJob("job-1")->job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(store->ReadMetrics("job-1", 0, 0, 100)->size(), 1u);
  EXPECT_TRUE(store->ReadLogs("job-1", 0, 100)->empty());
  // The store is still usable after the rollback.
  EXPECT_TRUE(store->AppendMetrics(SampleMetrics("job-1", 2)).ok());
}

TEST(StoreTest, ListsNewestFirstFilteredByStateAndCounts) {
  TempDir dir;
  auto store = OpenStore(dir.File("q.db"));
  const v1::JobState states[] = {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_QUEUED,
                                 v1::JOB_STATE_FAILED};
  for (int i = 0; i < 4; ++i) {
    JobRecord r = SampleJob("job-" + std::to_string(i));
    r.job.set_created_unix_ms(1000 + i);
    r.job.set_state(states[i]);
    ASSERT_TRUE(store->InsertJob(r).ok());
  }
  auto queued = store->ListJobs({v1::JOB_STATE_QUEUED}, 0);
  ASSERT_TRUE(queued.ok());
  ASSERT_EQ(queued->size(), 2u);
  EXPECT_EQ((*queued)[0].job.id(), "job-2");
  EXPECT_EQ((*queued)[1].job.id(), "job-0");
  auto limited = store->ListJobs({}, 3);
  ASSERT_EQ(limited->size(), 3u);
  EXPECT_EQ((*limited)[0].job.id(), "job-3");
  auto counts = store->CountJobsByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[v1::JOB_STATE_QUEUED], 2);
  EXPECT_EQ((*counts)[v1::JOB_STATE_RUNNING], 1);
  EXPECT_EQ((*counts)[v1::JOB_STATE_FAILED], 1);
}

}  // namespace
}  // namespace qlorad::server::testing
