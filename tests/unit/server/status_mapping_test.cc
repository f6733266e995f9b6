#include "server/status_mapping.h"

#include <gtest/gtest.h>

namespace qlorad::server {
namespace {

TEST(StatusMappingTest, EveryCodeMapsToItsGrpcCounterpart) {
  const std::pair<StatusCode, grpc::StatusCode> cases[] = {
      {StatusCode::kOk, grpc::StatusCode::OK},
      {StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
      {StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
      {StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
      {StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
      {StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
      {StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
      {StatusCode::kInternal, grpc::StatusCode::INTERNAL},
      {StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
      {StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
      {StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
  };
  for (const auto& [ours, theirs] : cases) EXPECT_EQ(ToGrpcCode(ours), theirs);
}

TEST(StatusMappingTest, MessageIsKept) {
  grpc::Status s = ToGrpcStatus(InvalidArgument("train.lr: must be > 0"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "train.lr: must be > 0");
  EXPECT_TRUE(ToGrpcStatus(Status::Ok()).ok());
}

}  // namespace
}  // namespace qlorad::server
