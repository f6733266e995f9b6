// StreamMetrics / StreamLogs: replay from a step (or seq), then live events, then the end once
// the job is terminal; a reader too slow for its queue still gets every step exactly once.
#include <gtest/gtest.h>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

// Reads a metrics stream on a thread, so the test can keep reporting while it follows. With
// hold_after, it stops reading after that many steps until Release().
class MetricsReader {
 public:
  MetricsReader(v1::JobService::Stub& stub, const std::string& job_id, int64_t from_step,
                std::optional<size_t> hold_after = std::nullopt, bool stored_only = false) {
    thread_ = std::thread([this, &stub, job_id, from_step, hold_after, stored_only] {
      v1::StreamMetricsRequest request;
      request.set_job_id(job_id);
      request.set_from_step(from_step);
      request.set_stored_only(stored_only);
      context_.set_deadline(std::chrono::system_clock::now() + 60s);
      auto reader = stub.StreamMetrics(&context_, request);
      v1::StepMetrics m;
      while (reader->Read(&m)) {
        std::unique_lock<std::mutex> lock(mu_);
        steps_.push_back(m.step());
        if (steps_.size() == hold_after) cv_.wait(lock, [&] { return released_; });
      }
      grpc::Status status = reader->Finish();
      std::lock_guard<std::mutex> lock(mu_);
      status_ = status;
      ended_ = true;
    });
  }
  ~MetricsReader() {
    if (thread_.joinable()) {
      Release();
      context_.TryCancel();
      thread_.join();
    }
  }

  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  std::vector<int64_t> steps() {
    std::lock_guard<std::mutex> lock(mu_);
    return steps_;
  }
  bool ended() {
    std::lock_guard<std::mutex> lock(mu_);
    return ended_;
  }
  grpc::Status Join() {
    thread_.join();
    return status_;
  }

 private:
  grpc::ClientContext context_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  std::vector<int64_t> steps_;
  bool ended_ = false;
  grpc::Status status_;
};

// A stub on its own channel whose client buffers at most ~1 KiB of a stream ahead of its reader
// (gRPC's default window is 64 KiB and grows while it is read). A reader that stops reading then
// stops the server's writes to it soon, as a slow client would; 400 steps do not fit in 1 KiB.
std::unique_ptr<v1::JobService::Stub> NarrowWindowStub(TestServer& server) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  return v1::JobService::NewStub(grpc::CreateCustomChannel(
      server.server().grpc_address(), grpc::InsecureChannelCredentials(), args));
}

std::vector<int64_t> Range(int64_t first, int64_t last) {
  std::vector<int64_t> r;
  for (int64_t s = first; s <= last; ++s) r.push_back(s);
  return r;
}

TEST(StreamMetricsTest, ReplaysFromStepThenFollowsLiveThenEndsAtTerminal) {
  OneWorker env;
  TestServer& server = env.server;
  FakeWorker& worker = env.worker;
  const auto [job, start] = env.StartJob();
  std::vector<v1::TrainerEvent> first;
  for (int step = 1; step <= 5; ++step) first.push_back(MetricsEvent(start, step, 5.0 - step));
  ASSERT_TRUE(worker.Report(first).ok());

  MetricsReader reader(server.jobs(), job.id(), /*from_step=*/3);
  ASSERT_TRUE(WaitFor([&] { return reader.steps() == Range(3, 5); })) << "replay of steps 3..5";
  ASSERT_TRUE(worker.Report({MetricsEvent(start, 6, 0.5), MetricsEvent(start, 7, 0.4)}).ok());
  ASSERT_TRUE(WaitFor([&] { return reader.steps() == Range(3, 7); })) << "live steps 6, 7";
  EXPECT_FALSE(reader.ended()) << "the job still runs, so the stream stays open";

  ASSERT_TRUE(
      worker.Report({MetricsEvent(start, 8, 0.3), DoneEvent(start, "/a"), ExitEvent(start, 0)})
          .ok());
  grpc::Status status = reader.Join();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reader.steps(), Range(3, 8));
}

TEST(StreamMetricsTest, StreamOfAFinishedJobReplaysAndEnds) {
  OneWorker env;
  TestServer& server = env.server;
  FakeWorker& worker = env.worker;
  const auto [job, start] = env.StartJob();
  ASSERT_TRUE(worker
                  .Report({MetricsEvent(start, 1, 1.0), MetricsEvent(start, 2, 0.9),
                           DoneEvent(start, "/a"), ExitEvent(start, 0)})
                  .ok());
  MetricsReader reader(server.jobs(), job.id(), /*from_step=*/0);
  EXPECT_TRUE(reader.Join().ok());
  EXPECT_EQ(reader.steps(), Range(1, 2));
}

TEST(StreamMetricsTest, StoredOnlyEndsAfterTheStoredStepsOfARunningJob) {
  OneWorker env;
  const auto [job, start] = env.StartJob();
  std::vector<v1::TrainerEvent> steps;
  for (int step = 1; step <= 3; ++step) steps.push_back(MetricsEvent(start, step, 1.0 / step));
  ASSERT_TRUE(env.worker.Report(steps).ok());
  MetricsReader reader(env.server.jobs(), job.id(), /*from_step=*/2, std::nullopt,
                       /*stored_only=*/true);
  // The job still runs: a following stream would stay open until its 60 s deadline.
  const grpc::Status status = reader.Join();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reader.steps(), Range(2, 3));
  // A later call sees what was stored since.
  ASSERT_TRUE(env.worker.Report({MetricsEvent(start, 4, 0.25)}).ok());
  MetricsReader later(env.server.jobs(), job.id(), 0, std::nullopt, /*stored_only=*/true);
  EXPECT_TRUE(later.Join().ok());
  EXPECT_EQ(later.steps(), Range(1, 4));
}

TEST(StreamMetricsTest, UnknownJobIsNotFound) {
  TempDir dir;
  TestServer server(dir.File("qlorad.db"));
  MetricsReader reader(server.jobs(), "job-00000000", 0);
  EXPECT_EQ(reader.Join().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(StreamMetricsTest, StalledReaderGetsEveryStepOnceAndNeverHoldsUpReports) {
  // A queue of 4 overflows at once; the stream must fall back to reading SQLite.
  OneWorker env(30s, /*queue_capacity=*/4);
  TestServer& server = env.server;
  FakeWorker& worker = env.worker;
  const auto [job, start] = env.StartJob();
  ASSERT_TRUE(worker.Report({MetricsEvent(start, 1, 1.0)}).ok());

  auto stub = NarrowWindowStub(server);
  MetricsReader reader(*stub, job.id(), 0, /*hold_after=*/1);
  ASSERT_TRUE(WaitFor([&] { return reader.steps() == Range(1, 1); }));
  // The reader takes nothing more until released, so the stream's writes back up. Every report
  // must return all the same: one that waited for the reader would wait until its deadline.
  constexpr int kSteps = 400;
  for (int step = 2; step <= kSteps; step += 10) {
    std::vector<v1::TrainerEvent> batch;
    for (int s = step; s < step + 10 && s <= kSteps; ++s)
      batch.push_back(MetricsEvent(start, s, 1.0));
    const grpc::Status reported = worker.Report(batch);
    ASSERT_TRUE(reported.ok()) << "steps from " << step << ": " << reported.error_message();
  }
  reader.Release();
  ASSERT_TRUE(worker.Report({DoneEvent(start, "/a"), ExitEvent(start, 0)}).ok());
  EXPECT_TRUE(reader.Join().ok());
  EXPECT_EQ(reader.steps(), Range(1, kSteps));
}

TEST(StreamLogsTest, ReplaysFromSeqAndEndsAtTerminal) {
  OneWorker env;
  TestServer& server = env.server;
  FakeWorker& worker = env.worker;
  const auto [job, start] = env.StartJob();
  v1::TrainerEvent log = EventFor(start);
  log.mutable_log()->set_level("info");
  log.mutable_log()->set_message("loading model");
  ASSERT_TRUE(worker.Report({log, DoneEvent(start, "/a"), ExitEvent(start, 0)}).ok());

  const auto all = server.Logs(job.id());
  ASSERT_GE(all.size(), 3u);  // submitted, assigned, the trainer's line, completed
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].seq(), static_cast<int64_t>(i + 1));
  bool saw_trainer_line = false;
  for (const auto& l : all) {
    if (l.source() == "trainer" && l.message() == "loading model") saw_trainer_line = true;
  }
  EXPECT_TRUE(saw_trainer_line);

  grpc::ClientContext ctx;
  v1::StreamLogsRequest request;
  request.set_job_id(job.id());
  request.set_from_seq(2);
  auto reader = server.jobs().StreamLogs(&ctx, request);
  std::vector<int64_t> seqs;
  v1::LogLine line;
  while (reader->Read(&line)) seqs.push_back(line.seq());
  EXPECT_TRUE(reader->Finish().ok());
  ASSERT_EQ(seqs.size(), all.size() - 1);
  EXPECT_EQ(seqs.front(), 2);
}

}  // namespace
}  // namespace qlorad::server::testing
