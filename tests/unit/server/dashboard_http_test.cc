// The dashboard over a real socket: its pages (first paint without scripts), static files, the
// job and workers JSON, the cancel endpoint and its cross-site guard, and the event streams
// (replay, live updates, resume, the end of a job, the cap on open streams).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <nlohmann/json.hpp>

#include "server/dashboard_data.h"
#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A coordinator with HTTP on, one fake worker, and one job running on it.
struct Dashboard {
  explicit Dashboard(HttpOptions http_options = {})
      : server(dir.File("qlorad.db"), 30s, 1024, "127.0.0.1:0", http_options),
        worker(server.channel(), "host-gpu0") {
    worker.Connect();
    job = server.Submit(SpecYaml({.name = "alpaca"}));
    start = worker.NextOrder().value_or(v1::Assignment());
    EXPECT_EQ(start.job_id(), job.id());
    auto [h, p] = SplitHostPort(server.server().http_address(), "http").value();
    host = h;
    port = p;
  }

  httplib::Client Client() const {
    httplib::Client client(host, port);
    client.set_read_timeout(30, 0);
    return client;
  }

  TempDir dir;
  TestServer server;
  FakeWorker worker;
  v1::Job job;
  v1::Assignment start;
  std::string host;
  int port = 0;
};

// Reads an event stream on a thread; the test waits for what it expects to arrive.
class StreamReader {
 public:
  StreamReader(const Dashboard& d, std::string path, httplib::Headers headers = {})
      : client_(d.host, d.port) {
    client_.set_read_timeout(30, 0);
    thread_ = std::thread([this, path = std::move(path), headers = std::move(headers)] {
      auto res = client_.Get(path, headers, [this](const char* data, size_t n) {
        std::lock_guard<std::mutex> lock(mu_);
        body_.append(data, n);
        return !stop_;
      });
      std::lock_guard<std::mutex> lock(mu_);
      ended_ = true;
      status_ = res ? res->status : -1;
    });
  }
  ~StreamReader() { Stop(); }

  bool WaitFor(const std::string& text) {
    return WaitFor([&](const std::string& body) { return body.find(text) != std::string::npos; });
  }
  bool WaitFor(const std::function<bool(const std::string&)>& pred) {
    return qlorad::server::testing::WaitFor([&] { return pred(body()); });
  }
  bool WaitEnded() {
    return qlorad::server::testing::WaitFor([&] {
      std::lock_guard<std::mutex> lock(mu_);
      return ended_;
    });
  }
  std::string body() {
    std::lock_guard<std::mutex> lock(mu_);
    return body_;
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    client_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  httplib::Client client_;
  std::thread thread_;
  std::mutex mu_;
  std::string body_;
  bool stop_ = false;
  bool ended_ = false;
  int status_ = 0;
};

// The data of every event of that name in an event-stream body, parsed.
std::vector<nlohmann::json> Events(const std::string& body, const std::string& name) {
  std::vector<nlohmann::json> out;
  const std::string marker = "event: " + name + "\ndata: ";
  for (size_t at = body.find(marker); at != std::string::npos; at = body.find(marker, at + 1)) {
    const size_t begin = at + marker.size();
    const size_t end = body.find('\n', begin);
    if (end == std::string::npos) break;
    out.push_back(nlohmann::json::parse(body.substr(begin, end - begin)));
  }
  return out;
}

// Steps of the rows of every `metrics` event.
std::vector<int64_t> StreamedSteps(const std::string& body) {
  std::vector<int64_t> steps;
  for (const auto& event : Events(body, "metrics")) {
    for (const auto& row : event["rows"]) steps.push_back(row[2].get<int64_t>());
  }
  return steps;
}

v1::TrainerEvent RankMetrics(const v1::Assignment& order, int64_t step, int64_t vram) {
  v1::TrainerEvent e = MetricsEvent(order, step, 3.0 - 0.25 * static_cast<double>(step));
  e.mutable_metrics()->set_lr(1e-4);
  e.mutable_metrics()->set_grad_norm(0.5);
  e.mutable_metrics()->set_vram_allocated_bytes(vram);
  e.mutable_metrics()->set_vram_peak_bytes(2 * vram);
  e.mutable_metrics()->set_wall_time_s(static_cast<double>(step));
  return e;
}

TEST(DashboardHttpTest, PagesShowTheJobWithoutScripts) {
  Dashboard d;
  ASSERT_TRUE(d.worker
                  .Report({RankMetrics(d.start, 1, 1 << 30), RankMetrics(d.start, 2, 1 << 30),
                           CheckpointEvent(d.start, 2, "/ck/2")})
                  .ok());
  auto client = d.Client();

  auto jobs = client.Get("/");
  ASSERT_TRUE(jobs);
  EXPECT_EQ(jobs->status, 200);
  EXPECT_THAT(jobs->get_header_value("Content-Security-Policy"), HasSubstr("default-src 'self'"));
  EXPECT_THAT(jobs->body, HasSubstr("<a href=\"/jobs/" + d.job.id() + "\">"));
  EXPECT_THAT(jobs->body, HasSubstr("alpaca"));
  EXPECT_THAT(jobs->body, HasSubstr("2 / 10"));
  EXPECT_THAT(jobs->body, HasSubstr("2.5000"));                         // the loss of step 2
  EXPECT_THAT(jobs->body, HasSubstr("<td class=\"c-eta\">0:08</td>"));  // 8 steps at 1 s

  auto page = client.Get("/jobs/" + d.job.id());
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_THAT(page->body, HasSubstr("name: alpaca"));                          // the spec
  EXPECT_THAT(page->body, HasSubstr("checkpoint at step 2 (rank 0): /ck/2"));  // an event
  EXPECT_THAT(page->body, HasSubstr("ev-checkpoint"));
  EXPECT_THAT(page->body, HasSubstr("1.00 GiB"));  // rank 0's VRAM in the rank table
  EXPECT_THAT(page->body, HasSubstr("id=\"chart-vram\""));
  EXPECT_THAT(page->body, HasSubstr("<button id=\"cancel\" type=\"button\" data-job="));
  EXPECT_THAT(page->body, Not(HasSubstr(" disabled>Cancel")));

  auto missing = client.Get("/jobs/job-nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_THAT(missing->body, HasSubstr("job-nope"));

  auto workers = client.Get("/workers");
  ASSERT_TRUE(workers);
  EXPECT_EQ(workers->status, 200);
  EXPECT_THAT(workers->body, HasSubstr("host-gpu0"));
  EXPECT_THAT(workers->body, HasSubstr("cpu:0 test cpu"));
  EXPECT_THAT(workers->body, HasSubstr(d.job.id() + "</a> rank 0"));
}

TEST(DashboardHttpTest, StaticFilesAreCompiledIn) {
  Dashboard d;
  auto client = d.Client();
  for (const char* name : {"common.js", "chart.js", "jobs.js", "job.js", "workers.js"}) {
    auto res = client.Get(std::string("/static/") + name);
    ASSERT_TRUE(res) << name;
    EXPECT_EQ(res->status, 200) << name;
    EXPECT_THAT(res->get_header_value("Content-Type"), HasSubstr("text/javascript")) << name;
    EXPECT_THAT(res->body, HasSubstr("\"use strict\";")) << name;
  }
  auto css = client.Get("/static/style.css");
  ASSERT_TRUE(css);
  EXPECT_THAT(css->get_header_value("Content-Type"), HasSubstr("text/css"));
  auto missing = client.Get("/static/nope.js");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

TEST(DashboardHttpTest, JobAndWorkersJson) {
  Dashboard d;
  ASSERT_TRUE(d.worker.Report({RankMetrics(d.start, 1, 4096)}).ok());
  auto client = d.Client();
  auto res = client.Get("/api/jobs/" + d.job.id());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  const auto detail = nlohmann::json::parse(res->body);
  EXPECT_EQ(detail["job"]["id"], d.job.id());
  EXPECT_THAT(detail["job"]["spec_yaml"].get<std::string>(), HasSubstr("name: alpaca"));
  ASSERT_EQ(detail["metrics"]["rows"].size(), 1u);
  EXPECT_EQ(detail["metrics"]["columns"][7], "vram_allocated_bytes");
  EXPECT_EQ(detail["metrics"]["rows"][0][7], 4096);
  EXPECT_FALSE(detail["logs"].empty());
  EXPECT_TRUE(ParseStreamCursor(detail["cursor"], "cursor").ok());

  auto workers = client.Get("/api/workers");
  ASSERT_TRUE(workers);
  const auto list = nlohmann::json::parse(workers->body)["workers"];
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["name"], "host-gpu0");
  EXPECT_EQ(list[0]["devices"][0]["name"], "test cpu");
  EXPECT_EQ(list[0]["running"][0]["job_id"], d.job.id());
  EXPECT_EQ(list[0]["running"][0]["rank"], 0);

  auto missing = client.Get("/api/jobs/job-nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_THAT(nlohmann::json::parse(missing->body)["error"].get<std::string>(),
              HasSubstr("job-nope"));
}

// The qlorad_csrf cookie a page set ("qlorad_csrf=HEX") and the token the page carries.
std::pair<std::string, std::string> CsrfOf(const httplib::Result& page) {
  std::string cookie;
  for (const auto& [name, value] : page->headers) {
    if (name == "Set-Cookie" && value.rfind("qlorad_csrf=", 0) == 0) {
      cookie = value.substr(0, value.find(';'));
      EXPECT_THAT(value, HasSubstr("HttpOnly; SameSite=Strict"));
    }
  }
  const std::string marker = "data-csrf=\"";
  const size_t at = page->body.find(marker);
  EXPECT_NE(at, std::string::npos);
  const size_t from = at + marker.size();
  return {cookie, page->body.substr(from, page->body.find('"', from) - from)};
}

TEST(DashboardHttpTest, CancelNeedsAJsonRequestFromThisOriginWithTheCsrfToken) {
  Dashboard d;
  auto client = d.Client();
  const std::string path = "/api/jobs/" + d.job.id() + "/cancel";
  auto page = client.Get("/jobs/" + d.job.id());
  ASSERT_TRUE(page);
  const auto [cookie, token] = CsrfOf(page);
  ASSERT_EQ(cookie, "qlorad_csrf=" + token);
  ASSERT_EQ(token.size(), 64u);
  // The page again with its cookie: the same token, no new cookie.
  auto again_page = client.Get("/jobs/" + d.job.id(), {{"Cookie", cookie}});
  ASSERT_TRUE(again_page);
  EXPECT_FALSE(again_page->has_header("Set-Cookie"));
  EXPECT_THAT(again_page->body, HasSubstr("data-csrf=\"" + token + "\""));
  const httplib::Headers csrf = {{"Cookie", cookie}, {"X-CSRF-Token", token}};

  // What a cross-site HTML form can send: refused, and the job goes on.
  auto form = client.Post(path, csrf, "x=1", "application/x-www-form-urlencoded");
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 415);
  EXPECT_THAT(form->body, HasSubstr("Content-Type"));
  httplib::Headers other_origin = csrf;
  other_origin.emplace("Origin", "http://evil.example");
  auto other_site = client.Post(path, other_origin, "{}", "application/json");
  ASSERT_TRUE(other_site);
  EXPECT_EQ(other_site->status, 403);
  // Without the token, with a wrong one, or without the cookie: 403 saying so.
  auto no_token = client.Post(path, {{"Cookie", cookie}}, "{}", "application/json");
  ASSERT_TRUE(no_token);
  EXPECT_EQ(no_token->status, 403);
  EXPECT_THAT(no_token->body, HasSubstr("CSRF check failed: no CSRF token"));
  auto wrong = client.Post(path, {{"Cookie", cookie}, {"X-CSRF-Token", std::string(64, '0')}}, "{}",
                           "application/json");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 403);
  EXPECT_THAT(wrong->body, HasSubstr("does not match its qlorad_csrf cookie"));
  auto no_cookie = client.Post(path, {{"X-CSRF-Token", token}}, "{}", "application/json");
  ASSERT_TRUE(no_cookie);
  EXPECT_EQ(no_cookie->status, 403);
  EXPECT_THAT(no_cookie->body, HasSubstr("no qlorad_csrf cookie"));
  EXPECT_EQ(d.server.Get(d.job.id()).state(), v1::JOB_STATE_RUNNING);

  const std::string origin = "http://" + d.host + ":" + std::to_string(d.port);
  httplib::Headers same_origin = csrf;
  same_origin.emplace("Origin", origin);
  auto cancel = client.Post(path, same_origin, "{}", "application/json");
  ASSERT_TRUE(cancel);
  EXPECT_EQ(cancel->status, 200);
  EXPECT_EQ(nlohmann::json::parse(cancel->body)["id"], d.job.id());
  // The same path as CancelJob: the worker is told to stop the trainer.
  auto order = d.worker.NextOrder();
  ASSERT_TRUE(order.has_value());
  EXPECT_EQ(order->kind(), v1::Assignment::KIND_CANCEL);
  ASSERT_TRUE(d.worker.Report({ExitEvent(d.start, -1, 15, "", true)}).ok());
  EXPECT_TRUE(d.server.WaitForState(d.job.id(), v1::JOB_STATE_CANCELLED));

  auto again = client.Post(path, csrf, "{}", "application/json");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 409);
  auto unknown = client.Post("/api/jobs/job-nope/cancel", csrf, "{}", "application/json");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
}

TEST(DashboardHttpTest, JobStreamReplaysFollowsAndEndsWithTheJob) {
  Dashboard d;
  ASSERT_TRUE(d.worker.Report({RankMetrics(d.start, 1, 1024)}).ok());
  StreamReader reader(d, "/api/jobs/" + d.job.id() + "/stream");
  ASSERT_TRUE(reader.WaitFor("event: job\n")) << reader.body();
  EXPECT_EQ(StreamedSteps(reader.body()), std::vector<int64_t>({1}));  // the replay

  ASSERT_TRUE(d.worker.Report({RankMetrics(d.start, 2, 1024)}).ok());
  ASSERT_TRUE(reader.WaitFor([](const std::string& body) {
    return StreamedSteps(body) == std::vector<int64_t>({1, 2});
  })) << reader.body();
  ASSERT_TRUE(d.worker
                  .Report({CheckpointEvent(d.start, 2, "/ck/2"), DoneEvent(d.start, "/out/adapter"),
                           ExitEvent(d.start, 0)})
                  .ok());
  ASSERT_TRUE(reader.WaitEnded()) << reader.body();
  const std::string body = reader.body();
  EXPECT_THAT(body, HasSubstr("event: end\n"));
  const auto jobs = Events(body, "job");
  ASSERT_FALSE(jobs.empty());
  EXPECT_EQ(jobs.back()["job"]["state"], "COMPLETED");
  EXPECT_THAT(jobs.back()["summary_html"].get<std::string>(), HasSubstr("/out/adapter"));
  bool checkpoint_event = false;
  for (const auto& logs : Events(body, "logs")) {
    if (logs["events_html"].get<std::string>().find("ev-checkpoint") != std::string::npos) {
      checkpoint_event = true;
    }
  }
  EXPECT_TRUE(checkpoint_event) << body;
}

TEST(DashboardHttpTest, JobStreamResumesFromTheLastEventId) {
  Dashboard d;
  ASSERT_TRUE(d.worker.Report({RankMetrics(d.start, 1, 1024)}).ok());
  auto client = d.Client();
  const auto detail = nlohmann::json::parse(client.Get("/api/jobs/" + d.job.id())->body);
  const std::string cursor = detail["cursor"];
  ASSERT_TRUE(d.worker.Report({RankMetrics(d.start, 2, 1024), RankMetrics(d.start, 3, 1024)}).ok());
  // As EventSource reconnects: only what came after the cursor.
  StreamReader reader(d, "/api/jobs/" + d.job.id() + "/stream", {{"Last-Event-ID", cursor}});
  ASSERT_TRUE(reader.WaitFor("event: job\n")) << reader.body();
  EXPECT_EQ(StreamedSteps(reader.body()), std::vector<int64_t>({2, 3}));

  auto bad = client.Get("/api/jobs/" + d.job.id() + "/stream?after=nope");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_THAT(bad->body, HasSubstr("after"));
}

TEST(DashboardHttpTest, OverviewStreamSendsChangedRowsAndWorkers) {
  Dashboard d;
  StreamReader reader(d, "/api/stream");
  ASSERT_TRUE(reader.WaitFor("event: workers\n")) << reader.body();
  const auto first = Events(reader.body(), "jobs");
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0]["order"], nlohmann::json::array({d.job.id()}));
  EXPECT_THAT(first[0]["rows"][d.job.id()].get<std::string>(), HasSubstr("0 / 10"));
  EXPECT_THAT(Events(reader.body(), "workers")[0]["html"].get<std::string>(),
              HasSubstr("host-gpu0"));

  ASSERT_TRUE(d.worker.Report({RankMetrics(d.start, 3, 1024)}).ok());
  ASSERT_TRUE(reader.WaitFor([&](const std::string& body) {
    for (const auto& e : Events(body, "jobs")) {
      if (e["rows"].contains(d.job.id()) &&
          e["rows"][d.job.id()].get<std::string>().find("3 / 10") != std::string::npos) {
        return true;
      }
    }
    return false;
  })) << reader.body();
}

TEST(DashboardHttpTest, EventStreamsAreCappedAndMetricsStillServed) {
  HttpOptions options;
  options.threads = 4;
  options.max_event_streams = 2;
  options.max_event_streams_per_client = 2;
  Dashboard d(options);
  StreamReader a(d, "/api/stream");
  StreamReader b(d, "/api/jobs/" + d.job.id() + "/stream");
  ASSERT_TRUE(a.WaitFor("event: jobs\n"));
  ASSERT_TRUE(b.WaitFor("event: job\n"));
  auto client = d.Client();
  auto refused = client.Get("/api/stream");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  EXPECT_THAT(refused->body, HasSubstr("--http-max-streams"));
  auto metrics = client.Get("/metrics");  // a thread is left for it
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  auto page = client.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
}

TEST(DashboardHttpTest, StreamCapMustLeaveThreadsForOtherRequests) {
  TempDir dir;
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.http = "127.0.0.1:0";
  options.coordinator.db_path = dir.File("qlorad.db");
  options.security.insecure_local = true;
  options.http_options.threads = 8;
  options.http_options.max_event_streams = 8;
  auto server = QloradServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("--http-max-streams"));
  EXPECT_THAT(server.status().message(), HasSubstr("--http-threads"));

  // Unset, the cap is half the threads, whatever their number.
  options.http_options.max_event_streams = 0;
  options.http_options.threads = 2;
  auto small = QloradServer::Start(options);
  ASSERT_TRUE(small.ok()) << small.status().ToString();
  EXPECT_EQ(options.http_options.EventStreamCap(), 1);
}

}  // namespace
}  // namespace qlorad::server::testing
