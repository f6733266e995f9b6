// The one place where qlorad's internal status codes become gRPC status codes.
#pragma once

#include <grpcpp/support/status.h>

#include "common/status.h"

namespace qlorad::server {

grpc::StatusCode ToGrpcCode(StatusCode code);
grpc::Status ToGrpcStatus(const Status& status);

}  // namespace qlorad::server
