// The coordinator's HTTP side (cpp-httplib): Prometheus text at /metrics, the dashboard at /,
// and the JSON it polls at /api/jobs. Read-only; it never changes a job.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "server/coordinator.h"

namespace httplib {
class Server;
}

namespace qlorad::server {

class HttpServer {
 public:
  explicit HttpServer(Coordinator& coordinator);
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
