#include "server/http.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "server/dashboard.h"
#include "server/prometheus.h"

namespace qlorad::server {
namespace {

void Reply(const StatusOr<std::string>& body, const char* content_type, httplib::Response& res) {
  if (body.ok()) {
    res.set_content(*body, content_type);
    return;
  }
  spdlog::error("http: {}", body.status().ToString());
  res.status = 500;
  res.set_content(body.status().ToString(), "text/plain");
}

}  // namespace

HttpServer::HttpServer(Coordinator& coordinator, const HttpOptions& options)
    : coordinator_(coordinator), server_(std::make_unique<httplib::Server>()) {
  const auto threads = static_cast<size_t>(options.threads);
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_->set_keep_alive_timeout(options.timeout_s);
  server_->set_read_timeout(options.timeout_s, 0);
  server_->set_write_timeout(options.timeout_s, 0);
  server_->set_payload_max_length(options.max_request_bytes);
  server_->Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(DashboardHtml(), "text/html; charset=utf-8");
  });
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    Reply(MetricsText(), "text/plain; version=0.0.4", res);
  });
  server_->Get("/api/jobs", [this](const httplib::Request&, httplib::Response& res) {
    Reply(JobsJsonText(), "application/json", res);
  });
}

HttpServer::~HttpServer() {
  Stop();
}

StatusOr<int> HttpServer::Start(const std::string& host, int port) {
  int bound = port;
  if (port == 0) {
    bound = server_->bind_to_any_port(host);
    if (bound < 0) return Unavailable("http: cannot bind " + host + ":0");
  } else if (!server_->bind_to_port(host, port)) {
    return Unavailable("http: cannot bind " + host + ":" + std::to_string(port));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return bound;
}

void HttpServer::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

StatusOr<std::string> HttpServer::MetricsText() {
  PrometheusSnapshot snapshot;
  snapshot.workers_online = coordinator_.online_workers();
  snapshot.workers_busy = coordinator_.busy_workers();
  Store& store = coordinator_.store();
  QLORAD_ASSIGN_OR_RETURN(snapshot.jobs_by_state, store.CountJobsByState());
  QLORAD_ASSIGN_OR_RETURN(JobPage newest, coordinator_.ListJobs({}, kJobsShown, ""));
  snapshot.jobs = std::move(newest.jobs);
  QLORAD_ASSIGN_OR_RETURN(snapshot.latest_metrics, store.LatestMetricsPerJob());
  QLORAD_ASSIGN_OR_RETURN(snapshot.latest_eval, store.LatestEvalPerJob());
  return RenderPrometheus(snapshot);
}

StatusOr<std::string> HttpServer::JobsJsonText() {
  QLORAD_ASSIGN_OR_RETURN(JobPage newest, coordinator_.ListJobs({}, kJobsShown, ""));
  const std::vector<v1::Job>& jobs = newest.jobs;
  std::map<std::string, JobCurves> curves;
  for (const auto& job : jobs) {
    QLORAD_ASSIGN_OR_RETURN(LossCurve loss, coordinator_.store().ReadLossCurve(job.id()));
    QLORAD_ASSIGN_OR_RETURN(LossCurve eval, coordinator_.store().ReadEvalLossCurve(job.id()));
    curves[job.id()] = {Downsample(loss, kChartPoints), Downsample(eval, kChartPoints)};
  }
  return JobsJson(jobs, curves).dump();
}

}  // namespace qlorad::server
