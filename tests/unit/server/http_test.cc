// The HTTP side over a real socket: Prometheus text, the jobs JSON (/api/jobs), and the
// dashboard's first page. dashboard_http_test.cc has the rest of the dashboard.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "server/dashboard.h"
#include "server/prometheus.h"
#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;

TEST(HttpTest, ServesMetricsJobsJsonAndDashboard) {
  TempDir dir;
  TestServer server(dir.File("qlorad.db"), 30s, 1024, "127.0.0.1:0");
  FakeWorker worker(server.channel(), "host-gpu0");
  worker.Connect();
  const v1::Job running = server.Submit(SpecYaml({.name = "running"}));
  auto start = worker.NextOrder();
  ASSERT_TRUE(start.has_value());
  server.Submit(SpecYaml({.name = "waiting"}));  // no free worker left: stays queued
  // Step 2 was evaluated (data.validation).
  v1::TrainerEvent evaluated = MetricsEvent(*start, 2, 2.25);
  evaluated.mutable_metrics()->set_eval_loss(2.5);
  evaluated.mutable_metrics()->set_eval_perplexity(12.25);
  ASSERT_TRUE(worker.Report({MetricsEvent(*start, 1, 2.5), evaluated}).ok());

  auto [host, port] = SplitHostPort(server.server().http_address(), "http").value();
  httplib::Client client(host, port);
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->body, HasSubstr("qlorad_jobs{state=\"running\"} 1\n"));
  EXPECT_THAT(metrics->body, HasSubstr("qlorad_jobs{state=\"queued\"} 1\n"));
  EXPECT_THAT(metrics->body, HasSubstr("qlorad_workers{state=\"busy\"} 1\n"));
  const std::string labels = "{job=\"" + running.id() + "\",name=\"running\"}";
  EXPECT_THAT(metrics->body, HasSubstr("qlorad_job_loss" + labels + " 2.25\n"));
  EXPECT_THAT(metrics->body, HasSubstr("qlorad_job_step" + labels + " 2\n"));
  EXPECT_THAT(metrics->body, HasSubstr("qlorad_job_tokens_per_second" + labels + " 1002\n"));
  EXPECT_THAT(metrics->body, HasSubstr("qlorad_job_eval_loss" + labels + " 2.5\n"));
  EXPECT_THAT(metrics->body, HasSubstr("qlorad_job_eval_perplexity" + labels + " 12.25\n"));

  auto jobs = client.Get("/api/jobs");
  ASSERT_TRUE(jobs);
  EXPECT_EQ(jobs->status, 200);
  const auto json = nlohmann::json::parse(jobs->body);
  ASSERT_EQ(json["jobs"].size(), 2u);
  const auto& first = json["jobs"][1];  // newest first: the running job is second
  EXPECT_EQ(first["id"], running.id());
  EXPECT_EQ(first["state"], "RUNNING");
  EXPECT_EQ(first["loss_curve"], nlohmann::json::parse("[[1, 2.5], [2, 2.25]]"));
  EXPECT_EQ(first["eval_loss_curve"], nlohmann::json::parse("[[2, 2.5]]"));
  EXPECT_EQ(first["eval_loss"], 2.5);
  EXPECT_TRUE(first["best"].is_null());
  EXPECT_TRUE(json["jobs"][0]["eval_loss"].is_null());  // the queued job: nothing evaluated

  // The dashboard's first paint has the rows, without scripts.
  auto page = client.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_THAT(page->body, HasSubstr("id=\"job-row-" + running.id() + "\""));
  EXPECT_THAT(page->body, HasSubstr("2 / 10"));
  EXPECT_THAT(page->body, HasSubstr("2.2500"));
  EXPECT_THAT(page->body, ::testing::Not(HasSubstr("loading")));
  EXPECT_THAT(page->body, ::testing::Not(HasSubstr("http://cdn")));
  EXPECT_THAT(page->body, ::testing::Not(HasSubstr("<script src=\"http")));
}

}  // namespace
}  // namespace qlorad::server::testing
