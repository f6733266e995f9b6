// What the coordinator refuses to start with (issue 19): without --insecure-local every call
// needs a token, so a store without one client token would lock everyone out; --insecure-local
// (no token needed) only on loopback addresses; tokens sent in clear text only over loopback.
#pragma once

#include <string>

#include "common/status.h"
#include "server/store.h"

namespace qlorad::server {

struct SecurityOptions {
  // Calls without a token act as the local admin. Only with loopback addresses.
  bool insecure_local = false;
  // PEM files; TLS for gRPC and HTTP when both are set (auth_tls.h).
  std::string tls_cert;
  std::string tls_key;
  // Mutual TLS: clients must present a certificate this CA signed.
  std::string tls_client_ca;

  bool tls() const { return !tls_cert.empty(); }
};

// 127.0.0.0/8, ::1 and "localhost".
bool IsLoopbackHost(const std::string& host);

// The checks above for the gRPC address (--listen) and the HTTP one (--http; "" when off), and
// the TLS flags given in pairs. Errors name the flag.
Status CheckSecurityFlags(const SecurityOptions& security, const std::string& grpc_host,
                          const std::string& http_host);

// Without --insecure-local: FAILED_PRECONDITION unless the store holds a live user or admin
// token, saying how to make one.
Status RequireClientToken(const SecurityOptions& security, Store& store,
                          const std::string& db_path);

}  // namespace qlorad::server
