// The coordinator's HTTP side (cpp-httplib): Prometheus text at /metrics, the dashboard's pages
// (/, /jobs/ID, /workers), its static files (/static/NAME), its JSON API (/api/...) and its
// event streams (server-sent events). server/README.md lists the endpoints. Every route but
// POST /api/jobs/ID/cancel only reads.
//
// cpp-httplib gives each connection a pool thread for as long as it stays open, idle ones
// included, and its default pool is 8 threads on a small machine: 8 idle connections were
// enough to stall /metrics (issue 19). So the pool is larger and every wait on a client (the idle
// time before and between requests, each read and each write) is bounded. A client holding
// more idle connections than the pool has threads still delays others by up to the timeout; the
// fix for that is an event-driven server, which cpp-httplib is not.
//
// An event stream holds its thread for as long as the page is open, so streams are capped below
// the pool's size (a stream past the cap gets 503): the other threads stay free for /metrics
// and the pages.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "common/status.h"
#include "server/auth_http.h"  // auth.h, and httplib's Server, Request and Response declared
#include "server/coordinator.h"
#include "server/stream_limiter.h"

namespace qlorad::server {

struct HttpOptions {
  int threads = 32;                             // connections served at once
  int timeout_s = 5;                            // idle connection, read and write timeout
  size_t max_request_bytes = size_t{64} << 10;  // the only body is a cancel's "{}"
  // Event streams open at once, in all (0: half of `threads`; it must stay below `threads`) and
  // per client (host). A browser opens one per dashboard tab.
  int max_event_streams = 0;
  int max_event_streams_per_client = 8;
  // TLS (HTTPS) with these PEM files when tls_cert is set; mutual TLS with tls_client_ca. Checked
  // beforehand (auth_tls.h).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;

  int EventStreamCap() const { return max_event_streams > 0 ? max_event_streams : threads / 2; }
};

class HttpServer {
 public:
  // Requests are authenticated by `auth` (auth_http.h); each user sees only their own jobs.
  HttpServer(Coordinator& coordinator, const Authenticator& auth, const HttpOptions& options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (port 0 picks a free one), serves on its own thread; returns the port.
  // INVALID_ARGUMENT naming the flag when the stream cap leaves no thread for other requests.
  StatusOr<int> Start(const std::string& host, int port);
  void Stop();

  int open_event_streams() const { return streams_.open_total(); }

 private:
  static constexpr size_t kChartPoints = 200;  // per job in /api/jobs

  // Who may see a page (users, admins), the JSON API (the same) or /metrics (metrics, admins).
  enum class Audience { kPage, kApi, kMetrics };
  // The caller, if its token allows `audience`; else the response says why (a page: to the
  // sign-in form; otherwise 401 or 403) and nullopt.
  std::optional<Principal> Caller(const httplib::Request& req, httplib::Response& res,
                                  Audience audience);
  void AddPageRoutes();
  void AddApiRoutes();
  void AddStreamRoutes();
  StatusOr<std::string> MetricsText();
  StatusOr<std::string> JobsJsonText(const Principal& viewer);

  Coordinator& coordinator_;
  const Authenticator& auth_;
  const HttpOptions options_;
  const bool secure_;  // served over TLS: cookies are Secure
  StreamLimiter streams_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
};

}  // namespace qlorad::server
