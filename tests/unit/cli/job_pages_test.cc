// WalkJobPages against a fake ListJobs: follows tokens, keeps the states, stops at the limit,
// and refuses to loop on a token that does not move on.
#include "client/cli/job_pages.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace qlorad::cli {
namespace {

using qlorad::v1::ListJobsRequest;
using qlorad::v1::ListJobsResponse;

// Serves jobs "j0".."j<n-1>" in pages of at most `server_page` (the server's cap), the token
// being the index of the next job; records every request.
struct FakeServer {
  int jobs = 0;
  int server_page = 3;
  std::vector<ListJobsRequest> requests = {};

  grpc::Status operator()(const ListJobsRequest& request, ListJobsResponse* response) {
    requests.push_back(request);
    const int start = request.page_token().empty() ? 0 : std::stoi(request.page_token());
    const int size =
        request.page_size() > 0 ? std::min(request.page_size(), server_page) : server_page;
    int i = start;
    for (; i < jobs && i < start + size; ++i) response->add_jobs()->set_id("j" + std::to_string(i));
    if (i < jobs) response->set_next_page_token(std::to_string(i));
    return grpc::Status::OK;
  }
};

std::vector<std::string> Walk(FakeServer& server, int limit, grpc::Status* status = nullptr) {
  ListJobsRequest request;
  request.add_states(qlorad::v1::JOB_STATE_QUEUED);
  std::vector<std::string> ids;
  const grpc::Status s = WalkJobPages(
      request, limit, [&](const auto& r, auto* p) { return server(r, p); },
      [&](const qlorad::v1::Job& job) { ids.push_back(job.id()); });
  if (status) *status = s;
  return ids;
}

TEST(WalkJobPages, FollowsTokensToTheLastPageKeepingTheStates) {
  FakeServer server{.jobs = 8};
  grpc::Status status;
  const auto ids = Walk(server, 0, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(ids, (std::vector<std::string>{"j0", "j1", "j2", "j3", "j4", "j5", "j6", "j7"}));
  ASSERT_EQ(server.requests.size(), 3u);
  EXPECT_EQ(server.requests[0].page_token(), "");
  EXPECT_EQ(server.requests[1].page_token(), "3");
  EXPECT_EQ(server.requests[2].page_token(), "6");
  for (const auto& r : server.requests) {
    EXPECT_EQ(r.page_size(), 0) << "without a limit the server picks the size";
    ASSERT_EQ(r.states_size(), 1);
    EXPECT_EQ(r.states(0), qlorad::v1::JOB_STATE_QUEUED);
  }
}

TEST(WalkJobPages, StopsAtTheLimitAskingOnlyForWhatIsLeft) {
  FakeServer server{.jobs = 8};
  EXPECT_EQ(Walk(server, 5), (std::vector<std::string>{"j0", "j1", "j2", "j3", "j4"}));
  ASSERT_EQ(server.requests.size(), 2u);
  EXPECT_EQ(server.requests[0].page_size(), 5);
  EXPECT_EQ(server.requests[1].page_size(), 2);
}

TEST(WalkJobPages, ATokenThatDoesNotMoveOnEndsTheWalkWithAnError) {
  int calls = 0;
  ListJobsRequest request;
  const grpc::Status status = WalkJobPages(
      request, 0,
      [&](const ListJobsRequest&, ListJobsResponse* page) {
        ++calls;
        page->add_jobs()->set_id("same");
        page->set_next_page_token("stuck");
        return grpc::Status::OK;
      },
      [](const qlorad::v1::Job&) {});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(calls, 2);
}

TEST(WalkJobPages, AFailedCallEndsTheWalkWithItsStatus) {
  const grpc::Status status = WalkJobPages(
      ListJobsRequest(), 0,
      [](const ListJobsRequest&, ListJobsResponse*) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "page_token: bad");
      },
      [](const qlorad::v1::Job&) { ADD_FAILURE() << "no job was listed"; });
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace qlorad::cli
