#include "client/cli/rpc.h"

#include <algorithm>
#include <cctype>

#include "client/cli/errors.h"
#include "client/cli/exit_codes.h"

namespace qlorad::cli {
namespace {

// What to do about an UNAVAILABLE that a TLS mismatch causes: gRPC's own message names neither
// the cause nor the flag.
std::string TlsHint(std::string message) {
  std::transform(message.begin(), message.end(), message.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (message.find("ssl") != std::string::npos || message.find("handshake") != std::string::npos ||
      message.find("certificate") != std::string::npos) {
    return " (the TLS handshake failed: --ca-file must name the CA that signed the coordinator's "
           "certificate, and under mutual TLS --cert and --key a certificate it accepts)";
  }
  if (message.find("socket closed") != std::string::npos) {
    return " (the coordinator closed the connection: if it serves TLS, pass --ca-file or --tls; "
           "under mutual TLS also --cert and --key)";
  }
  return "";
}

}  // namespace

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      break;
  }
  return "UNKNOWN";
}

int ReportRpcError(const grpc::Status& status, const std::string& server, std::ostream& err,
                   bool json) {
  const char* code = GrpcCodeName(status.error_code());
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return ReportError(err, json, code,
                         "cannot reach qlorad at " + server + ": " + status.error_message() +
                             TlsHint(status.error_message()),
                         kExitUnreachable);
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      // Only unary calls have deadlines; a coordinator that does not answer one is as good as gone.
      return ReportError(err, json, code,
                         "no answer from qlorad at " + server + " within " +
                             std::to_string(kUnaryDeadline.count()) + "s",
                         kExitUnreachable);
    default:
      return ReportError(err, json, code, std::string(code) + ": " + status.error_message(),
                         kExitFailed);
  }
}

void SetUnaryDeadline(grpc::ClientContext& context) {
  context.set_deadline(std::chrono::system_clock::now() + kUnaryDeadline);
}

}  // namespace qlorad::cli
