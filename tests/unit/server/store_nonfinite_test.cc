// A diverged step: the trainer reports a NaN (or infinite) loss just before it fails the job.
// SQLite binds a NaN as NULL, which the metrics table's NOT NULL columns refuse; the store must
// keep such a value as it came (NaN stays NaN, not NULL and not 0) and the coordinator must take
// the report, so the job goes on to fail with the trainer's message instead of its worker
// retrying a report that can never be written.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "server/store.h"
#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

v1::StepMetrics Step(int64_t step, double loss, double grad_norm) {
  v1::StepMetrics m;
  m.set_job_id("j");
  m.set_step(step);
  m.set_loss(loss);
  m.set_lr(1e-3);
  m.set_grad_norm(grad_norm);
  return m;
}

TEST(StoreNonFiniteTest, NanAndInfiniteValuesRoundTripThroughAReopen) {
  TempDir dir;
  const std::string db = dir.File("q.db");
  {
    auto store = Store::Open(db);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->InsertJob(MinimalJob("j")).ok());
    auto finite = (*store)->AppendMetrics(Step(1, 2.5, 0.5));
    ASSERT_TRUE(finite.ok()) << finite.status().ToString();
    auto nan = (*store)->AppendMetrics(Step(2, kNan, kNan));
    ASSERT_TRUE(nan.ok()) << nan.status().ToString();
    v1::StepMetrics evaluated = Step(3, kInf, -kInf);
    evaluated.set_eval_loss(kNan);  // evaluated, diverged: not the same as "not evaluated"
    evaluated.set_eval_perplexity(kNan);
    auto inf = (*store)->AppendMetrics(evaluated);
    ASSERT_TRUE(inf.ok()) << inf.status().ToString();
    JobRecord job = MinimalJob("j");
    job.job.set_last_loss(kNan);
    job.job.mutable_best()->set_step(3);
    job.job.mutable_best()->set_eval_loss(kInf);
    Status updated = (*store)->UpdateJob(job);
    ASSERT_TRUE(updated.ok()) << updated.ToString();
  }
  auto store = Store::Open(db);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto rows = (*store)->ReadMetrics("j", 0, 0, 10);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), 3u);
  const v1::StepMetrics& finite = (*rows)[0].value;
  EXPECT_EQ(finite.loss(), 2.5);
  EXPECT_EQ(finite.grad_norm(), 0.5);
  EXPECT_FALSE(finite.has_eval_loss());
  const v1::StepMetrics& nan = (*rows)[1].value;
  EXPECT_TRUE(std::isnan(nan.loss()));
  EXPECT_TRUE(std::isnan(nan.grad_norm()));
  EXPECT_EQ(nan.lr(), 1e-3);
  EXPECT_FALSE(nan.has_eval_loss());
  const v1::StepMetrics& inf = (*rows)[2].value;
  EXPECT_EQ(inf.loss(), kInf);
  EXPECT_EQ(inf.grad_norm(), -kInf);
  ASSERT_TRUE(inf.has_eval_loss());
  EXPECT_TRUE(std::isnan(inf.eval_loss()));
  EXPECT_TRUE(std::isnan(inf.eval_perplexity()));

  auto job = (*store)->GetJob("j");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_TRUE(std::isnan(job->job.last_loss()));
  EXPECT_EQ(job->job.best().eval_loss(), kInf);

  auto curve = (*store)->ReadLossCurve("j");
  ASSERT_TRUE(curve.ok()) << curve.status().ToString();
  ASSERT_EQ(curve->size(), 3u);
  EXPECT_TRUE(std::isnan((*curve)[1].second));
  EXPECT_EQ((*curve)[2].second, kInf);
  auto latest = (*store)->LatestEvalPerJob();
  ASSERT_TRUE(latest.ok()) << latest.status().ToString();
  EXPECT_TRUE(std::isnan(latest->at("j").eval_loss()));
}

// The events a worker forwards when training diverges, in one report, as the agent batches them.
TEST(StoreNonFiniteTest, ADivergedStepIsRecordedAndTheJobFailsWithTheTrainersMessage) {
  TempDir dir;
  TestServer server(dir.File("qlorad.db"), 30s, 1024, "127.0.0.1:0");
  FakeWorker worker(server.channel(), "host-gpu0");
  worker.Connect();
  SpecOptions no_restarts;
  no_restarts.max_restarts = 0;
  const v1::Job submitted = server.Submit(SpecYaml(no_restarts));
  auto start = worker.NextOrder();
  ASSERT_TRUE(start.has_value());
  v1::TrainerEvent diverged = MetricsEvent(*start, 2, kNan);
  diverged.mutable_metrics()->set_grad_norm(kNan);
  const std::string message = "training diverged: loss is nan at step 2";
  const grpc::Status reported =
      worker.Report({MetricsEvent(*start, 1, 3.5), diverged, ErrorEvent(*start, message, ""),
                     ExitEvent(*start, 1)});
  ASSERT_TRUE(reported.ok()) << reported.error_message();

  ASSERT_TRUE(server.WaitForState(submitted.id(), v1::JOB_STATE_FAILED));
  const v1::Job job = server.Get(submitted.id());
  EXPECT_EQ(job.last_step(), 2);
  EXPECT_TRUE(std::isnan(job.last_loss()));
  EXPECT_THAT(job.error(), HasSubstr(message));

  // Streamed back to a client as it was stored.
  grpc::ClientContext ctx;
  v1::StreamMetricsRequest request;
  request.set_job_id(submitted.id());
  auto reader = server.jobs().StreamMetrics(&ctx, request);
  std::vector<v1::StepMetrics> steps;
  for (v1::StepMetrics m; reader->Read(&m);) steps.push_back(m);
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].loss(), 3.5);
  EXPECT_TRUE(std::isnan(steps[1].loss()));
  EXPECT_TRUE(std::isnan(steps[1].grad_norm()));

  // Prometheus's text format spells it NaN; the dashboard's JSON, which has no NaN, as the
  // string protobuf's JSON mapping uses.
  auto [host, port] = SplitHostPort(server.server().http_address(), "http").value();
  httplib::Client client(host, port);
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  const std::string labels = "{job=\"" + submitted.id() + "\",name=\"tiny\"}";
  EXPECT_THAT(metrics->body, HasSubstr("qlorad_job_loss" + labels + " NaN\n"));
  auto jobs = client.Get("/api/jobs");
  ASSERT_TRUE(jobs);
  const auto json = nlohmann::json::parse(jobs->body);
  ASSERT_EQ(json["jobs"].size(), 1u);
  EXPECT_EQ(json["jobs"][0]["loss"], "NaN");
  EXPECT_EQ(json["jobs"][0]["loss_curve"], nlohmann::json::parse(R"([[1, 3.5], [2, "NaN"]])"));
}

}  // namespace
}  // namespace qlorad::server::testing
