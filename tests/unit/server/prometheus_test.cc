// /metrics over a real socket: service counters, per-worker gauges with the worker's name, per
// rank VRAM and throughput, and a finished job's series dropped once it has been gone longer
// than CoordinatorOptions::finished_series_ttl (on the test's clock, not the wall's).
#include "server/prometheus.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Scrape(TestServer& server) {
  auto [host, port] = SplitHostPort(server.server().http_address(), "http").value();
  httplib::Client client(host, port);
  auto res = client.Get("/metrics");
  EXPECT_TRUE(res);
  if (!res) return "";
  EXPECT_EQ(res->status, 200);
  return res->body;
}

v1::TrainerEvent Step(const v1::Assignment& order, int64_t step, double wall_s) {
  v1::TrainerEvent e = MetricsEvent(order, step, 2.0);
  e.mutable_metrics()->set_tokens_per_s(100.0);
  e.mutable_metrics()->set_wall_time_s(wall_s);
  e.mutable_metrics()->set_vram_allocated_bytes(1000 + order.rank());
  e.mutable_metrics()->set_vram_peak_bytes(3000);
  return e;
}

TEST(PrometheusTest, EscapesLabelValues) {
  EXPECT_EQ(EscapeLabel("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(PrometheusTest, CountersPerRankSeriesAndFinishedJobsLeaving) {
  TempDir dir;
  TestServer server(dir.File("qlorad.db"), 30s, 1024, "127.0.0.1:0");
  FakeWorker w0(server.channel(), "host-gpu0"), w1(server.channel(), "host-gpu1");
  w0.Connect();
  w1.Connect();
  const v1::Job job = server.Submit(SpecYaml({.name = "gang", .gpus = 2}));
  auto r0 = w0.NextOrder(), r1 = w1.NextOrder();
  ASSERT_TRUE(r0 && r1);
  const v1::Assignment& rank0 = r0->rank() == 0 ? *r0 : *r1;
  const v1::Assignment& rank1 = r0->rank() == 0 ? *r1 : *r0;
  FakeWorker& worker0 = r0->rank() == 0 ? w0 : w1;
  FakeWorker& worker1 = r0->rank() == 0 ? w1 : w0;
  const std::string name0 = r0->rank() == 0 ? "host-gpu0" : "host-gpu1";
  const std::string name1 = r0->rank() == 0 ? "host-gpu1" : "host-gpu0";
  ASSERT_TRUE(worker0.Report({Step(rank0, 1, 10), Step(rank0, 2, 12)}).ok());
  ASSERT_TRUE(worker1.Report({Step(rank1, 1, 10), Step(rank1, 2, 13)}).ok());

  std::string text = Scrape(server);
  EXPECT_THAT(text, HasSubstr("# TYPE qlorad_jobs_submitted_total counter\n"
                              "qlorad_jobs_submitted_total 1\n"));
  EXPECT_THAT(text, HasSubstr("qlorad_steps_total 2\n"));  // rank 0's steps
  // 100 tokens/s over 2 s (rank 0) and 3 s (rank 1); the first steps are left out.
  EXPECT_THAT(text, HasSubstr("qlorad_tokens_total 500\n"));
  const std::string labels1 =
      "{job=\"" + job.id() + "\",name=\"gang\",rank=\"1\",worker=\"" + name1 + "\"}";
  EXPECT_THAT(text, HasSubstr("qlorad_job_vram_allocated_bytes" + labels1 + " 1001\n"));
  EXPECT_THAT(text, HasSubstr("qlorad_job_vram_peak_bytes" + labels1 + " 3000\n"));
  EXPECT_THAT(text, HasSubstr("qlorad_job_rank_tokens_per_second{job=\"" + job.id() +
                              "\",name=\"gang\",rank=\"0\",worker=\"" + name0 + "\"} 100\n"));
  EXPECT_THAT(text, HasSubstr("qlorad_worker_device_memory_bytes{worker=\"host-gpu1\","
                              "device=\"cpu:0\",device_name=\"test cpu\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("qlorad_worker_running_ranks{worker=\"host-gpu0\"} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("qlorad_job_restarts_total{job=\"" + job.id() + "\",name=\"gang\"} 0\n"));

  ASSERT_TRUE(worker0.Report({DoneEvent(rank0, "/out/adapter"), ExitEvent(rank0, 0)}).ok());
  ASSERT_TRUE(worker1.Report({ExitEvent(rank1, 0)}).ok());
  ASSERT_TRUE(server.WaitForState(job.id(), v1::JOB_STATE_COMPLETED));
  text = Scrape(server);
  EXPECT_THAT(text, HasSubstr("qlorad_jobs_finished_total{state=\"completed\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("qlorad_jobs_finished_total{state=\"failed\"} 0\n"));
  // Just finished: a scrape still sees its last values.
  EXPECT_THAT(text, HasSubstr("qlorad_job_vram_allocated_bytes" + labels1));

  server.clock().Advance(121s);
  text = Scrape(server);
  EXPECT_THAT(text, Not(HasSubstr(job.id())));
  EXPECT_THAT(text, HasSubstr("qlorad_jobs_finished_total{state=\"completed\"} 1\n"));
}

// A failed attempt retried counts as a restart of that job once the retry reports a step.
TEST(PrometheusTest, AJobsRestartsCountItsRetriedAttempts) {
  TempDir dir;
  TestServer server(dir.File("qlorad.db"), 30s, 1024, "127.0.0.1:0");
  FakeWorker worker(server.channel(), "host-gpu0");
  worker.Connect();
  const v1::Job job = server.Submit(SpecYaml({.name = "flaky", .max_restarts = 2}));
  auto first = worker.NextOrder();
  ASSERT_TRUE(first);
  ASSERT_TRUE(worker.Report({Step(*first, 1, 10), ExitEvent(*first, 1)}).ok());
  auto second = worker.NextOrder();
  ASSERT_TRUE(second);
  ASSERT_EQ(second->attempt(), 1);
  ASSERT_TRUE(worker.Report({Step(*second, 1, 20)}).ok());
  EXPECT_THAT(Scrape(server),
              HasSubstr("qlorad_job_restarts_total{job=\"" + job.id() + "\",name=\"flaky\"} 1\n"));
}

// The followers of jobs are counted while their streams are open (bench/service waits on this).
TEST(PrometheusTest, OpenStreamsAreCountedUntilTheyClose) {
  TempDir dir;
  TestServer server(dir.File("qlorad.db"), 30s, 1024, "127.0.0.1:0");
  const v1::Job job = server.Submit(SpecYaml());  // queued: no worker, so the stream stays open
  EXPECT_THAT(Scrape(server), HasSubstr("qlorad_stream_subscribers{stream=\"metrics\"} 0\n"));
  grpc::ClientContext ctx;
  v1::StreamMetricsRequest request;
  request.set_job_id(job.id());
  auto reader = server.jobs().StreamMetrics(&ctx, request);
  EXPECT_TRUE(WaitFor([&] {
    return Scrape(server).find("qlorad_stream_subscribers{stream=\"metrics\"} 1\n") !=
           std::string::npos;
  }));
  EXPECT_THAT(Scrape(server), HasSubstr("qlorad_stream_subscribers{stream=\"logs\"} 0\n"));
  ctx.TryCancel();
  reader->Finish();
  EXPECT_TRUE(WaitFor([&] {
    return Scrape(server).find("qlorad_stream_subscribers{stream=\"metrics\"} 0\n") !=
           std::string::npos;
  }));
}

}  // namespace
}  // namespace qlorad::server::testing
