// TLS for the coordinator's gRPC and HTTP sides from --tls-cert / --tls-key PEM files, and mutual
// TLS with --tls-client-ca (clients must present a certificate that CA signed; their token still
// says who they are). The files are checked with OpenSSL at start, so a wrong path, a non-PEM
// file or a key that does not match the certificate is an error naming the flag, not a server
// that fails every handshake.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "common/status.h"
#include "server/auth_startup.h"

namespace qlorad::server {

// Insecure credentials without TLS flags; else TLS ones, checked as above.
StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(
    const SecurityOptions& security);

}  // namespace qlorad::server
