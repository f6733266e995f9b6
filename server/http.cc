#include "server/http.h"

#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include "server/assets.h"
#include "server/auth_http.h"
#include "server/dashboard.h"
#include "server/dashboard_data.h"
#include "server/dashboard_pages.h"
#include "server/dashboard_streams.h"
#include "server/prometheus.h"

namespace qlorad::server {
namespace {

// Job ids are "job-" and hex digits; the pattern is wider so a bad id reaches a 404 that says so.
#define QLORAD_JOB_ID "([A-Za-z0-9._-]+)"

constexpr const char* kJson = "application/json";
constexpr const char* kHtml = "text/html; charset=utf-8";

int HttpStatusOf(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAlreadyExists:
      return 409;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    default:
      return 500;
  }
}

void LogIfServerError(const Status& status) {
  if (HttpStatusOf(status.code()) >= 500) spdlog::error("http: {}", status.ToString());
}

void Reply(const StatusOr<std::string>& body, const char* content_type, httplib::Response& res) {
  if (body.ok()) {
    res.set_content(*body, content_type);
    return;
  }
  LogIfServerError(body.status());
  res.status = HttpStatusOf(body.status().code());
  res.set_content(body.status().ToString(), "text/plain");
}

void ReplyJson(const StatusOr<nlohmann::json>& body, httplib::Response& res) {
  if (body.ok()) {
    res.set_content(body->dump(), kJson);
    return;
  }
  LogIfServerError(body.status());
  res.status = HttpStatusOf(body.status().code());
  res.set_content(nlohmann::json{{"error", body.status().ToString()}}.dump(), kJson);
}

// Pages load scripts, styles and data from this server only.
void ReplyPage(const StatusOr<std::string>& html, httplib::Response& res) {
  res.set_header("Content-Security-Policy",
                 "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
  res.set_header("X-Content-Type-Options", "nosniff");
  if (html.ok()) {
    res.set_content(*html, kHtml);
    return;
  }
  LogIfServerError(html.status());
  res.status = HttpStatusOf(html.status().code());
  res.set_content(ErrorPageHtml(res.status, html.status().message()), kHtml);
}

// Writes what the stream has next; ends the response when the stream ended.
template <typename Stream>
bool WriteNext(Stream& stream, httplib::DataSink& sink) {
  std::string chunk;
  const bool more = stream.Next(&chunk);
  // An empty write would end the chunked body early.
  if (!chunk.empty() && !sink.write(chunk.data(), chunk.size())) return false;
  if (!more) sink.done();
  return true;
}

// The cancel is the one route that changes anything. Besides the caller's token (a cookie a
// cross-site request does not carry: SameSite=Strict), a page of another site must not be able
// to cancel a job: a cross-site form or a "simple" fetch cannot send a JSON content type without
// a CORS preflight, which this server never grants, and a browser's Origin must be this server.
Status CheckSameOriginJson(const httplib::Request& req) {
  const std::string type = req.get_header_value("Content-Type");
  if (type.rfind("application/json", 0) != 0) {
    return InvalidArgument(
        "Content-Type: must be application/json (with a JSON body such as {}), got '" + type +
        "'; a form post cannot cancel a job");
  }
  const std::string origin = req.get_header_value("Origin");
  const std::string host = req.get_header_value("Host");
  if (!origin.empty() && origin != "http://" + host && origin != "https://" + host) {
    return FailedPrecondition("Origin: '" + origin +
                              "' is not this server; cancel from its own dashboard");
  }
  return Status::Ok();
}

}  // namespace

HttpServer::HttpServer(Coordinator& coordinator, const Authenticator& auth,
                       const HttpOptions& options)
    : coordinator_(coordinator),
      auth_(auth),
      options_(options),
      secure_(!options.tls_cert.empty()),
      streams_(StreamLimits{options.EventStreamCap(), options.max_event_streams_per_client}),
      server_(options.tls_cert.empty()
                  ? std::make_unique<httplib::Server>()
                  : std::make_unique<httplib::SSLServer>(
                        options.tls_cert.c_str(), options.tls_key.c_str(),
                        options.tls_client_ca.empty() ? nullptr : options.tls_client_ca.c_str())) {
  const auto threads = static_cast<size_t>(options.threads);
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_->set_keep_alive_timeout(options.timeout_s);
  server_->set_read_timeout(options.timeout_s, 0);
  server_->set_write_timeout(options.timeout_s, 0);
  server_->set_payload_max_length(options.max_request_bytes);
  AddLoginRoutes(*server_, auth_, secure_);
  AddPageRoutes();
  AddApiRoutes();
  AddStreamRoutes();
}

std::optional<Principal> HttpServer::Caller(const httplib::Request& req, httplib::Response& res,
                                            Audience audience) {
  auto caller = HttpCaller(req, auth_);
  Status allowed = caller.status();
  if (caller.ok()) {
    allowed = audience == Audience::kMetrics
                  ? RequireRole(*caller, {Role::kMetrics, Role::kAdmin}, "/metrics")
                  : RequireRole(*caller, {Role::kUser, Role::kAdmin}, "the dashboard");
  }
  if (allowed.ok()) return *caller;
  if (audience == Audience::kPage && allowed.code() == StatusCode::kUnauthenticated) {
    res.set_redirect("/login", 303);
    return std::nullopt;
  }
  if (allowed.code() == StatusCode::kUnauthenticated) {
    res.set_header("WWW-Authenticate", "Bearer realm=\"qlorad\"");
  }
  ReplyJson(allowed, res);
  return std::nullopt;
}

void HttpServer::AddPageRoutes() {
  server_->Get("/", [this](const httplib::Request& req, httplib::Response& res) {
    auto caller = Caller(req, res, Audience::kPage);
    if (!caller) return;
    DashboardData data(coordinator_, *caller);
    auto jobs = data.NewestJobs();
    ReplyPage(jobs.ok() ? StatusOr<std::string>(JobsPageHtml(*jobs)) : jobs.status(), res);
  });
  server_->Get("/jobs/" QLORAD_JOB_ID, [this](const httplib::Request& req, httplib::Response& res) {
    auto caller = Caller(req, res, Audience::kPage);
    if (!caller) return;
    DashboardData data(coordinator_, *caller);
    auto detail = data.Detail(req.matches[1]);
    auto csrf = CsrfToken(req, res, secure_);
    if (!detail.ok()) return ReplyPage(detail.status(), res);
    if (!csrf.ok()) return ReplyPage(csrf.status(), res);
    ReplyPage(JobPageHtml(*detail, *csrf), res);
  });
  server_->Get("/workers", [this](const httplib::Request& req, httplib::Response& res) {
    if (!Caller(req, res, Audience::kPage)) return;
    ReplyPage(WorkersPageHtml(coordinator_.Workers()), res);
  });
  server_->Get("/static/([A-Za-z0-9._-]+)",
               [](const httplib::Request& req, httplib::Response& res) {
                 const EmbeddedAsset* asset = FindAsset(std::string(req.matches[1]));
                 if (asset == nullptr) {
                   res.status = 404;
                   res.set_content("no such file: " + std::string(req.matches[1]), "text/plain");
                   return;
                 }
                 // Compiled in, so they change only with the binary: a revalidation per page load
                 // is cheap.
                 res.set_header("Cache-Control", "no-cache");
                 res.set_header("X-Content-Type-Options", "nosniff");
                 res.set_content(std::string(asset->body), std::string(asset->content_type));
               });
}

void HttpServer::AddApiRoutes() {
  server_->Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
    if (!Caller(req, res, Audience::kMetrics)) return;
    Reply(MetricsText(), "text/plain; version=0.0.4", res);
  });
  server_->Get("/api/jobs", [this](const httplib::Request& req, httplib::Response& res) {
    auto caller = Caller(req, res, Audience::kApi);
    if (!caller) return;
    Reply(JobsJsonText(*caller), kJson, res);
  });
  server_->Get("/api/jobs/" QLORAD_JOB_ID,
               [this](const httplib::Request& req, httplib::Response& res) {
                 auto caller = Caller(req, res, Audience::kApi);
                 if (!caller) return;
                 DashboardData data(coordinator_, *caller);
                 auto detail = data.Detail(req.matches[1]);
                 if (!detail.ok()) return ReplyJson(detail.status(), res);
                 nlohmann::json job = JobJson(detail->row);
                 job["spec_yaml"] = detail->row.job.spec_yaml();
                 nlohmann::json logs = nlohmann::json::array(), events = nlohmann::json::array();
                 for (const auto& line : detail->log_tail) logs.push_back(LogLineJson(line));
                 for (const auto& line : detail->events) events.push_back(LogLineJson(line));
                 ReplyJson(nlohmann::json{{"job", std::move(job)},
                                          {"metrics", MetricsJson(detail->metrics)},
                                          {"logs", std::move(logs)},
                                          {"events", std::move(events)},
                                          {"cursor", FormatStreamCursor(detail->cursor)}},
                           res);
               });
  server_->Post("/api/jobs/" QLORAD_JOB_ID "/cancel",
                [this](const httplib::Request& req, httplib::Response& res) {
                  if (Status allowed = CheckSameOriginJson(req); !allowed.ok()) {
                    res.status = allowed.code() == StatusCode::kInvalidArgument ? 415 : 403;
                    res.set_content(nlohmann::json{{"error", allowed.ToString()}}.dump(), kJson);
                    return;
                  }
                  auto caller = Caller(req, res, Audience::kApi);
                  if (!caller) return;
                  if (Status csrf = CheckCsrf(req); !csrf.ok()) return ReplyJson(csrf, res);
                  DashboardData data(coordinator_, *caller);
                  if (auto visible = data.Job(req.matches[1]); !visible.ok()) {
                    return ReplyJson(visible.status(), res);
                  }
                  auto job = coordinator_.CancelJob(req.matches[1]);
                  if (!job.ok()) return ReplyJson(job.status(), res);
                  ReplyJson(JobJson({*job, std::nullopt}), res);
                });
  server_->Get("/api/workers", [this](const httplib::Request& req, httplib::Response& res) {
    if (!Caller(req, res, Audience::kApi)) return;
    ReplyJson(WorkersJson(coordinator_.Workers()), res);
  });
}

void HttpServer::AddStreamRoutes() {
  // Both take a place under the stream cap for as long as they are open (503 past it: the
  // page's script retries later).
  auto acquire = [this](const httplib::Request& req,
                        httplib::Response& res) -> std::shared_ptr<StreamLimiter::Slot> {
    std::string refusal;  // names the gRPC streams' flags: these have their own
    auto slot = streams_.TryAcquire(req.remote_addr, &refusal);
    if (!slot) {
      res.status = 503;
      res.set_header("Retry-After", "5");
      res.set_content(
          fmt::format("too many event streams open: at most {} in all and {} per "
                      "client (qlorad --http-max-streams, "
                      "--http-max-streams-per-client); the page retries",
                      options_.max_event_streams, options_.max_event_streams_per_client),
          "text/plain");
      return nullptr;
    }
    res.set_header("Cache-Control", "no-cache");
    return std::make_shared<StreamLimiter::Slot>(std::move(*slot));
  };
  server_->Get("/api/jobs/" QLORAD_JOB_ID "/stream",
               [this, acquire](const httplib::Request& req, httplib::Response& res) {
                 const std::string job_id = req.matches[1];
                 // EventSource resumes with the last id it saw; a first connection says where
                 // its page's data ends with ?after=.
                 const bool resumed = req.has_header("Last-Event-ID");
                 auto cursor = ParseStreamCursor(
                     resumed ? req.get_header_value("Last-Event-ID") : req.get_param_value("after"),
                     resumed ? "Last-Event-ID" : "after");
                 if (!cursor.ok()) return ReplyJson(cursor.status(), res);
                 auto caller = Caller(req, res, Audience::kApi);
                 if (!caller) return;
                 if (auto job = DashboardData(coordinator_, *caller).Job(job_id); !job.ok()) {
                   return ReplyJson(job.status(), res);
                 }
                 auto slot = acquire(req, res);
                 if (!slot) return;
                 auto stream = std::make_shared<JobEventStream>(coordinator_, job_id, *cursor);
                 res.set_chunked_content_provider("text/event-stream",
                                                  [stream, slot](size_t, httplib::DataSink& sink) {
                                                    return WriteNext(*stream, sink);
                                                  });
               });
  server_->Get("/api/stream", [this, acquire](const httplib::Request& req, httplib::Response& res) {
    auto caller = Caller(req, res, Audience::kApi);
    if (!caller) return;
    auto slot = acquire(req, res);
    if (!slot) return;
    auto stream = std::make_shared<OverviewStream>(coordinator_, *caller);
    res.set_chunked_content_provider(
        "text/event-stream",
        [stream, slot](size_t, httplib::DataSink& sink) { return WriteNext(*stream, sink); });
  });
}

HttpServer::~HttpServer() {
  Stop();
}

StatusOr<int> HttpServer::Start(const std::string& host, int port) {
  if (options_.EventStreamCap() >= options_.threads) {
    return InvalidArgument("--http-max-streams: must be below --http-threads (" +
                           std::to_string(options_.threads) + ") so that /metrics and the pages " +
                           "keep threads while event streams are open, got " +
                           std::to_string(options_.EventStreamCap()));
  }
  if (!server_->is_valid()) {
    return InvalidArgument("--tls-cert/--tls-key/--tls-client-ca: HTTPS cannot use them");
  }
  int bound = port;
  if (port == 0) {
    bound = server_->bind_to_any_port(host);
    if (bound < 0) return Unavailable("http: cannot bind " + host + ":0");
  } else if (!server_->bind_to_port(host, port)) {
    return Unavailable("http: cannot bind " + host + ":" + std::to_string(port));
  }
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    listen_returned_ = true;
  });
  // httplib's stop() does nothing before the accept loop runs, so a server stopped right after
  // it started would never end its thread (seen: a test hung in Stop): return once it runs.
  while (!server_->is_running() && !listen_returned_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return bound;
}

void HttpServer::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

StatusOr<std::string> HttpServer::MetricsText() {
  PrometheusSnapshot snapshot;
  snapshot.workers = coordinator_.Workers();
  snapshot.workers_busy = coordinator_.busy_workers();
  snapshot.counters = coordinator_.counters();
  snapshot.jobs = coordinator_.LiveSeries();
  snapshot.metric_subscribers = static_cast<int64_t>(coordinator_.metrics_hub().subscriber_count());
  snapshot.log_subscribers = static_cast<int64_t>(coordinator_.log_hub().subscriber_count());
  QLORAD_ASSIGN_OR_RETURN(snapshot.jobs_by_state, coordinator_.store().CountJobsByState());
  return RenderPrometheus(snapshot);
}

StatusOr<std::string> HttpServer::JobsJsonText(const Principal& viewer) {
  DashboardData data(coordinator_, viewer);
  QLORAD_ASSIGN_OR_RETURN(std::vector<JobRow> jobs, data.NewestJobs());
  std::map<std::string, JobCurves> curves;
  for (const auto& row : jobs) {
    const std::string& id = row.job.id();
    QLORAD_ASSIGN_OR_RETURN(LossCurve loss, coordinator_.store().ReadLossCurve(id));
    QLORAD_ASSIGN_OR_RETURN(LossCurve eval, coordinator_.store().ReadEvalLossCurve(id));
    curves[id] = {Downsample(loss, kChartPoints), Downsample(eval, kChartPoints)};
  }
  return JobsJson(jobs, curves).dump();
}

}  // namespace qlorad::server
