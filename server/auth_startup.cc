#include "server/auth_startup.h"

#include <arpa/inet.h>

#include "server/coordinator.h"

namespace qlorad::server {

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  std::string bare = host;
  if (bare.size() > 2 && bare.front() == '[' && bare.back() == ']') {
    bare = bare.substr(1, bare.size() - 2);
  }
  in_addr v4{};
  if (inet_pton(AF_INET, bare.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return inet_pton(AF_INET6, bare.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

Status CheckSecurityFlags(const SecurityOptions& security, const std::string& grpc_host,
                          const std::string& http_host) {
  if (security.tls_cert.empty() != security.tls_key.empty()) {
    return InvalidArgument("--tls-cert and --tls-key: give both (PEM files) or neither");
  }
  if (!security.tls_client_ca.empty() && !security.tls()) {
    return InvalidArgument("--tls-client-ca: mutual TLS needs --tls-cert and --tls-key too");
  }
  for (const auto& [flag, host] :
       {std::pair<std::string, std::string>{"--listen", grpc_host}, {"--http", http_host}}) {
    if (host.empty() || IsLoopbackHost(host)) continue;
    if (security.insecure_local) {
      return InvalidArgument(flag + ": '" + host +
                             "' is not a loopback address, and --insecure-local lets calls "
                             "without a token in: bind 127.0.0.1, or drop --insecure-local");
    }
    if (!security.tls()) {
      return InvalidArgument(flag + ": '" + host +
                             "' is not a loopback address: tokens would cross the network in "
                             "clear text; give --tls-cert and --tls-key");
    }
  }
  return Status::Ok();
}

Status RequireClientToken(const SecurityOptions& security, Store& store,
                          const std::string& db_path) {
  if (security.insecure_local) return Status::Ok();
  QLORAD_ASSIGN_OR_RETURN(auto tokens, store.ListTokens());
  for (const TokenRecord& t : tokens) {
    if (t.valid(NowUnixMs()) && (t.role == "user" || t.role == "admin")) return Status::Ok();
  }
  return FailedPrecondition(
      "authentication is on and " + db_path +
      " has no client token: nobody could call this coordinator. Make one with `qlorad token "
      "create --db " +
      db_path +
      " --user NAME --role admin`, or run on loopback without tokens with --insecure-local");
}

}  // namespace qlorad::server
