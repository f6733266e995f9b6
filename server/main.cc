// qlorad: the coordinator. Flags, logging, signals; everything else is in qlorad_server.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "server/server.h"
#include "server/token_command.h"

int main(int argc, char** argv) {
  qlorad::server::ServerOptions options;
  int64_t heartbeat_timeout_ms = 10000;
  double grace_period_s = 5.0;
  std::string log_level = "info";

  CLI::App app{"qlorad: the QLoRA fine-tuning coordinator"};
  app.add_option("--listen", options.listen, "gRPC address (host:port; port 0 picks one)")
      ->capture_default_str();
  app.add_option("--http", options.http, "HTTP address for /metrics and the dashboard, or off")
      ->capture_default_str();
  app.add_option("--db", options.coordinator.db_path, "SQLite job store")->capture_default_str();
  app.add_option("--heartbeat-timeout-ms", heartbeat_timeout_ms,
                 "drop a worker silent this long and retry its jobs")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--grace-period-s", grace_period_s,
                 "on shutdown, how long in-flight calls get before they are cancelled")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--http-threads", options.http_options.threads,
                 "HTTP connections served at once (each open connection holds one)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--http-timeout-s", options.http_options.timeout_s,
                 "HTTP: close a connection idle, or stalled in a read or write, this long")
      ->capture_default_str()
      ->check(CLI::Range(1, 600));
  app.add_option("--http-max-streams", options.http_options.max_event_streams,
                 "dashboard event streams served at once (each holds an HTTP thread; must be "
                 "below --http-threads); more get 503 and retry [default: half of --http-threads]")
      ->check(CLI::PositiveNumber);
  app.add_option("--http-max-streams-per-client", options.http_options.max_event_streams_per_client,
                 "dashboard event streams one client (host) may hold open at once")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-spec-bytes", options.coordinator.max_spec_bytes,
                 "refuse job specs longer than this at submit")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, qlorad::server::kMaxSpecBytesLimit));
  app.add_option("--max-streams", options.streams.max_total,
                 "metric and log streams served at once; more are refused (RESOURCE_EXHAUSTED)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-streams-per-client", options.streams.max_per_client,
                 "metric and log streams one client (host) may hold open at once")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  qlorad::server::SecurityOptions& security = options.security;
  app.add_flag("--insecure-local", security.insecure_local,
               "accept calls without a token as the local admin; loopback addresses only");
  app.add_option("--tls-cert", security.tls_cert, "PEM certificate (chain): TLS for gRPC and HTTP");
  app.add_option("--tls-key", security.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", security.tls_client_ca,
                 "PEM CA: mutual TLS, clients must present a certificate it signed");
  qlorad::server::TokenCommand token_command;
  qlorad::server::AddTokenCommand(app, token_command);
  CLI11_PARSE(app, argc, argv);
  if (token_command.app->parsed()) {
    return qlorad::server::RunTokenCommand(token_command, std::cout, std::cerr);
  }

  options.coordinator.db_path =
      options.coordinator.db_path.empty() ? "qlorad.db" : options.coordinator.db_path;
  options.coordinator.heartbeat_timeout = std::chrono::milliseconds(heartbeat_timeout_ms);
  options.grace_period = std::chrono::milliseconds(static_cast<int64_t>(grace_period_s * 1000));
  spdlog::set_level(spdlog::level::from_str(log_level));

  // Block the signals before any thread starts so every thread inherits the mask and only
  // sigwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = qlorad::server::QloradServer::Start(options);
  if (!server.ok()) {
    std::cerr << "qlorad: " << server.status().ToString() << "\n";
    return 1;
  }
  std::string http = (*server)->http_address().empty() ? "off" : (*server)->http_address();
  std::cout << "qlorad listening on " << (*server)->grpc_address() << " (http " << http << ")"
            << std::endl;

  int received = 0;
  sigwait(&signals, &received);
  spdlog::info("received signal {}, shutting down", received);
  (*server)->Shutdown();
  return 0;
}
