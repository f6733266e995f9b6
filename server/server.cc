#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <charconv>

#include "proto/keepalive.h"
#include "server/auth_tls.h"

namespace qlorad::server {

StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address,
                                                    const std::string& flag) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return InvalidArgument(flag + ": expected host:port, got '" + address + "'");
  }
  int port = -1;
  const char* begin = address.data() + colon + 1;
  const char* end = address.data() + address.size();
  auto [ptr, ec] = std::from_chars(begin, end, port);
  if (ec != std::errc() || ptr != end || port < 0 || port > 65535) {
    return InvalidArgument(flag + ": bad port in '" + address + "'");
  }
  return std::make_pair(address.substr(0, colon), port);
}

StatusOr<std::unique_ptr<QloradServer>> QloradServer::Start(ServerOptions options) {
  QLORAD_ASSIGN_OR_RETURN(auto listen, SplitHostPort(options.listen, "--listen"));
  std::pair<std::string, int> http;
  if (options.http != "off") {
    QLORAD_ASSIGN_OR_RETURN(http, SplitHostPort(options.http, "--http"));
  }
  QLORAD_RETURN_IF_ERROR(CheckSecurityFlags(options.security, listen.first, http.first));
  std::unique_ptr<QloradServer> server(new QloradServer());
  server->options_ = options;
  QLORAD_ASSIGN_OR_RETURN(server->coordinator_, Coordinator::Create(options.coordinator));
  QLORAD_RETURN_IF_ERROR(RequireClientToken(options.security, server->coordinator_->store(),
                                            options.coordinator.db_path));
  server->auth_ = std::make_unique<Authenticator>(server->coordinator_->store(),
                                                  options.security.insecure_local);
  server->job_service_ =
      std::make_unique<JobServiceImpl>(*server->coordinator_, *server->auth_, options.streams);
  server->worker_service_ =
      std::make_unique<WorkerServiceImpl>(*server->coordinator_, *server->auth_);

  QLORAD_ASSIGN_OR_RETURN(auto credentials, GrpcServerCredentials(options.security));
  // For operators: grpc.health.v1.Health (load balancers, orchestrators' probes, grpc_health_probe)
  // and server reflection (`grpcurl -plaintext HOST:PORT list` needs no .proto files).
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  int grpc_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &grpc_port);
  SetServerKeepalive(builder);
  builder.RegisterService(server->job_service_.get());
  builder.RegisterService(server->worker_service_.get());
  server->grpc_server_ = builder.BuildAndStart();
  if (!server->grpc_server_ || grpc_port == 0) {
    return Unavailable("--listen: cannot listen on " + options.listen);
  }
  server->grpc_address_ = listen.first + ":" + std::to_string(grpc_port);
  // The server as a whole ("") is SERVING from here; each service by its name too.
  for (const char* service : {"qlorad.v1.JobService", "qlorad.v1.WorkerService"}) {
    server->grpc_server_->GetHealthCheckService()->SetServingStatus(service, true);
  }

  if (options.http != "off") {
    HttpOptions& http_options = server->options_.http_options;
    http_options.tls_cert = options.security.tls_cert;
    http_options.tls_key = options.security.tls_key;
    http_options.tls_client_ca = options.security.tls_client_ca;
    server->http_server_ =
        std::make_unique<HttpServer>(*server->coordinator_, *server->auth_, http_options);
    QLORAD_ASSIGN_OR_RETURN(int http_port, server->http_server_->Start(http.first, http.second));
    server->http_address_ = http.first + ":" + std::to_string(http_port);
  }
  server->coordinator_->Start();
  if (options.security.insecure_local) {
    spdlog::warn("--insecure-local: calls without a token act as the local admin");
  }
  spdlog::info("authentication: tokens{}; TLS: {}",
               options.security.insecure_local ? " (optional on loopback)" : "",
               !options.security.tls()                  ? "off"
               : options.security.tls_client_ca.empty() ? "on"
                                                        : "on, with client certificates");
  return server;
}

QloradServer::~QloradServer() {
  Shutdown();
}

void QloradServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  // Streams poll the coordinator, so stopping it first lets them end inside the grace period.
  if (coordinator_) coordinator_->Stop();
  if (grpc_server_) {
    // NOT_SERVING for every service, and Watch callers told so, before calls are refused.
    grpc_server_->GetHealthCheckService()->Shutdown();
    grpc_server_->Shutdown(std::chrono::system_clock::now() + options_.grace_period);
    grpc_server_->Wait();
  }
  if (http_server_) http_server_->Stop();
  spdlog::info("qlorad stopped");
}

}  // namespace qlorad::server
