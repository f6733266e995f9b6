// The coordinator's HTTP side (cpp-httplib): Prometheus text at /metrics, the dashboard at /,
// and the JSON it polls at /api/jobs. Read-only; it never changes a job.
//
// cpp-httplib gives each connection a pool thread for as long as it stays open, idle ones
// included, and its default pool is 8 threads on a small machine: 8 idle connections were
// enough to stall /metrics (issue 19). So the pool is larger and every wait on a client (the idle
// time before and between requests, each read and each write) is bounded. A client holding
// more idle connections than the pool has threads still delays others by up to the timeout; the
// fix for that is an event-driven server, which cpp-httplib is not.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "server/coordinator.h"

namespace httplib {
class Server;
}

namespace qlorad::server {

struct HttpOptions {
  int threads = 32;                             // connections served at once
  int timeout_s = 5;                            // idle connection, read and write timeout
  size_t max_request_bytes = size_t{64} << 10;  // every route is a GET: no body is needed
};

class HttpServer {
 public:
  HttpServer(Coordinator& coordinator, const HttpOptions& options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (port 0 picks a free one), serves on its own thread; returns the port.
  StatusOr<int> Start(const std::string& host, int port);
  void Stop();

 private:
  // Jobs with per-job series and charts: the newest ones, so a long history stays cheap.
  static constexpr int kJobsShown = 50;
  static constexpr size_t kChartPoints = 200;

  StatusOr<std::string> MetricsText();
  StatusOr<std::string> JobsJsonText();

  Coordinator& coordinator_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace qlorad::server
