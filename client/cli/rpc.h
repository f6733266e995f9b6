// How qloractl reports a failed RPC: "error: <CODE>: <message>" and exit code 1, except when no
// coordinator answered at all (exit code 3, naming the address so a wrong --server is obvious).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <optional>
#include <ostream>
#include <string>

#include "client/cli/command_context.h"

namespace qlorad::cli {

// Unary calls give up after this long; streams have no deadline.
inline constexpr std::chrono::seconds kUnaryDeadline{30};

// grpc::StatusCode::INVALID_ARGUMENT -> "INVALID_ARGUMENT".
const char* GrpcCodeName(grpc::StatusCode code);

// Prints the error for a failed call (errors.h: text, or a JSON line with `json`) and returns the
// exit code to use.
int ReportRpcError(const grpc::Status& status, const std::string& server, std::ostream& err,
                   bool json = false);

void SetUnaryDeadline(grpc::ClientContext& context);

template <typename Request, typename Response>
using UnaryMethod = grpc::Status (qlorad::v1::JobService::StubInterface::*)(grpc::ClientContext*,
                                                                            const Request&,
                                                                            Response*);

// Makes one unary call with the standard deadline. Returns nothing on success; on failure prints
// the error and returns the exit code to leave with.
template <typename Request, typename Response>
std::optional<int> CallUnary(const CommandContext& ctx, UnaryMethod<Request, Response> method,
                             const Request& request, Response* response) {
  grpc::ClientContext context;
  SetUnaryDeadline(context);
  const grpc::Status status = (ctx.stub.*method)(&context, request, response);
  if (status.ok()) return std::nullopt;
  return ReportRpcError(status, ctx.options.server, ctx.err, ctx.options.json);
}

}  // namespace qlorad::cli
