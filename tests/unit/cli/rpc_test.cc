#include "client/cli/rpc.h"

#include <gtest/gtest.h>

#include <sstream>

namespace qlorad::cli {
namespace {

struct Reported {
  int exit_code;
  std::string err;
};

Reported Report(grpc::StatusCode code, const std::string& message) {
  std::ostringstream err;
  const int exit_code = ReportRpcError(grpc::Status(code, message), "10.0.0.5:50051", err);
  return {exit_code, err.str()};
}

TEST(ReportRpcError, ServerErrorsNameTheCodeAndExitOne) {
  const Reported invalid =
      Report(grpc::StatusCode::INVALID_ARGUMENT, "train.lr: must be > 0, got -1");
  EXPECT_EQ(invalid.exit_code, 1);
  EXPECT_EQ(invalid.err, "error: INVALID_ARGUMENT: train.lr: must be > 0, got -1\n");
  const Reported missing = Report(grpc::StatusCode::NOT_FOUND, "job job-x not found");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "error: NOT_FOUND: job job-x not found\n");
}

TEST(ReportRpcError, UnreachableNamesTheAddressAndExitsThree) {
  const Reported r = Report(grpc::StatusCode::UNAVAILABLE, "Connection refused");
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.err, "error: cannot reach qlorad at 10.0.0.5:50051: Connection refused\n");
}

TEST(ReportRpcError, NoAnswerInTimeCountsAsUnreachable) {
  const Reported r = Report(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded");
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.err, "error: no answer from qlorad at 10.0.0.5:50051 within 30s\n");
}

TEST(GrpcCodeName, EveryCode) {
  EXPECT_STREQ(GrpcCodeName(grpc::StatusCode::OK), "OK");
  EXPECT_STREQ(GrpcCodeName(grpc::StatusCode::FAILED_PRECONDITION), "FAILED_PRECONDITION");
  EXPECT_STREQ(GrpcCodeName(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
  EXPECT_STREQ(GrpcCodeName(static_cast<grpc::StatusCode>(99)), "UNKNOWN");
}

}  // namespace
}  // namespace qlorad::cli
