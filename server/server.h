// The whole coordinator in one object: store + coordinator, the gRPC server with JobService and
// WorkerService, and the optional HTTP side. main() and the in-process tests both use it.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"
#include "server/auth.h"
#include "server/auth_startup.h"
#include "server/coordinator.h"
#include "server/http.h"
#include "server/job_service.h"
#include "server/worker_service.h"

namespace qlorad::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";  // port 0 picks a free one
  std::string http = "127.0.0.1:8080";     // "off" disables the HTTP side
  // How long in-flight calls get to finish on shutdown before they are cancelled.
  std::chrono::milliseconds grace_period{5000};
  SecurityOptions security;
  CoordinatorOptions coordinator;
  StreamLimits streams;
  HttpOptions http_options;
};

// "127.0.0.1:8080" -> host and port; INVALID_ARGUMENT naming `flag` otherwise.
StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address,
                                                    const std::string& flag);

class QloradServer {
 public:
  static StatusOr<std::unique_ptr<QloradServer>> Start(ServerOptions options);
  ~QloradServer();

  // The addresses actually bound (with the real port when 0 was asked for).
  const std::string& grpc_address() const { return grpc_address_; }
  const std::string& http_address() const { return http_address_; }  // empty when off
  Coordinator& coordinator() { return *coordinator_; }

  void Shutdown();

 private:
  QloradServer() = default;

  ServerOptions options_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<JobServiceImpl> job_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<HttpServer> http_server_;
  std::string grpc_address_;
  std::string http_address_;
  bool shut_down_ = false;
};

}  // namespace qlorad::server
