// ListJobs in pages: sizes and tokens on their own, the store's keyset on ties, and a walk over
// gRPC that must list every job once, without specs, while jobs keep arriving.
#include "server/job_pages.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;

TEST(JobPagesTest, PageSizeDefaultsAndIsCappedAndNegativeIsNamed) {
  EXPECT_EQ(ResolvePageSize(0).value(), kDefaultJobPageSize);
  EXPECT_EQ(ResolvePageSize(7).value(), 7);
  EXPECT_EQ(ResolvePageSize(kMaxJobPageSize + 1).value(), kMaxJobPageSize);
  auto negative = ResolvePageSize(-1);
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(negative.status().message(), HasSubstr("page_size: must be >= 0, got -1"));
}

TEST(JobPagesTest, TokensRoundTripAndForeignOnesAreNamed) {
  EXPECT_FALSE(DecodePageToken("").value().has_value());
  const auto back = DecodePageToken(EncodePageToken({1234, "job-00ab"})).value();
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->created_unix_ms, 1234);
  EXPECT_EQ(back->id, "job-00ab");
  for (const std::string bad : {"job-00ab", "v1:", "v1:12", "v1:12:", "v1:x:job-1", "v1:-5:job-1",
                                "v2:12:job-1", "v1:99999999999999999999999:job-1"}) {
    auto decoded = DecodePageToken(bad);
    ASSERT_FALSE(decoded.ok()) << bad;
    EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(decoded.status().message(), HasSubstr("page_token: '" + bad + "'"));
  }
}

TEST(JobPagesTest, StoreSummariesLeaveSpecsOutAndBreakTiesById) {
  TempDir dir;
  auto store = Store::Open(dir.File("q.db")).value();
  // Three jobs created in the same millisecond: only the id orders them.
  for (const std::string id : {"job-a", "job-b", "job-c", "job-d"}) {
    JobRecord r;
    r.job.set_id(id);
    r.job.set_name(id);
    r.job.set_state(v1::JOB_STATE_QUEUED);
    r.job.set_spec_yaml("name: " + id + "\n");
    r.job.set_created_unix_ms(id == "job-d" ? 2000 : 1000);
    ASSERT_TRUE(store->InsertJob(r).ok());
  }
  auto first = store->ListJobSummaries({}, 2, std::nullopt).value();
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].job.id(), "job-d");
  EXPECT_EQ(first[1].job.id(), "job-c");
  EXPECT_EQ(first[0].job.spec_yaml(), "");
  auto rest = store->ListJobSummaries({}, 0, JobCursor{1000, "job-c"}).value();
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].job.id(), "job-b");
  EXPECT_EQ(rest[1].job.id(), "job-a");
  EXPECT_EQ(store->GetJob("job-a")->job.spec_yaml(), "name: job-a\n") << "the spec is stored";
}

grpc::Status List(TestServer& server, int page_size, const std::string& token,
                  v1::ListJobsResponse* response, std::vector<v1::JobState> states = {}) {
  grpc::ClientContext ctx;
  v1::ListJobsRequest request;
  request.set_page_size(page_size);
  request.set_page_token(token);
  for (auto s : states) request.add_states(s);
  return server.jobs().ListJobs(&ctx, request, response);
}

TEST(JobPagesTest, WalkListsEveryJobOnceWithoutSpecsWhileJobsArrive) {
  TempDir dir;
  TestServer server(dir.File("q.db"));
  std::set<std::string> submitted;
  for (int i = 0; i < 7; ++i) {
    submitted.insert(server.Submit(SpecYaml({.name = "job" + std::to_string(i)})).id());
  }
  std::vector<std::string> listed;
  std::vector<size_t> page_sizes;
  std::string late;
  std::string token;
  for (int calls = 0; calls < 10; ++calls) {  // bounds a server that never ends the walk
    v1::ListJobsResponse page;
    const grpc::Status status = List(server, 3, token, &page);
    ASSERT_TRUE(status.ok()) << status.error_message();
    page_sizes.push_back(page.jobs_size());
    for (const auto& job : page.jobs()) {
      listed.push_back(job.id());
      EXPECT_EQ(job.spec_yaml(), "") << "listed jobs leave the spec out";
      EXPECT_FALSE(job.name().empty());
    }
    // A job submitted mid-walk must not push an already listed job into the next page (as an
    // offset would). Being newer it is not listed again, unless it shares the millisecond of
    // the page's end and its random id sorts after it; then it is listed once.
    if (calls == 0) late = server.Submit(SpecYaml({.name = "late"})).id();
    token = page.next_page_token();
    if (token.empty()) break;
  }
  std::set<std::string> unique(listed.begin(), listed.end());
  EXPECT_EQ(unique.size(), listed.size()) << "no job listed twice";
  unique.erase(late);
  EXPECT_EQ(unique, submitted);
  ASSERT_EQ(page_sizes.size(), 3u);
  EXPECT_EQ(page_sizes[0], 3u);
  EXPECT_EQ(page_sizes[1], 3u);
  EXPECT_EQ(page_sizes[2], listed.size() - 6);
  const v1::Job got = server.Get(listed.front());
  EXPECT_EQ(got.spec_yaml(), SpecYaml({.name = got.name()})) << "GetJob still returns the spec";
}

TEST(JobPagesTest, ExactlyFullLastPageHasNoTokenAndStatesFilterPages) {
  TempDir dir;
  TestServer server(dir.File("q.db"));
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(server.Submit(SpecYaml()).id());
  v1::Job cancelled;
  ASSERT_TRUE(server.Cancel(ids[1], &cancelled).ok());
  v1::ListJobsResponse page;
  ASSERT_TRUE(List(server, 3, "", &page, {v1::JOB_STATE_QUEUED}).ok());
  ASSERT_EQ(page.jobs_size(), 3);
  EXPECT_EQ(page.next_page_token(), "") << "no empty page after a full last one";
  for (const auto& job : page.jobs()) EXPECT_NE(job.id(), ids[1]);
}

TEST(JobPagesTest, BadPageSizeAndTokenAreInvalidArgumentNamingTheField) {
  TempDir dir;
  TestServer server(dir.File("q.db"));
  v1::ListJobsResponse page;
  grpc::Status status = List(server, -2, "", &page);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("page_size"));
  status = List(server, 0, "garbage", &page);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("page_token: 'garbage'"));
}

}  // namespace
}  // namespace qlorad::server::testing
