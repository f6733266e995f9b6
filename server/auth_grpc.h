// The caller of a gRPC call, from its `authorization` metadata (auth.h has the roles).
#pragma once

#include <grpcpp/grpcpp.h>

#include "server/auth.h"

namespace qlorad::server {

StatusOr<Principal> CallerOf(const grpc::ServerContext& context, const Authenticator& auth);

}  // namespace qlorad::server
