// The dashboard's pure parts: the ETA, event kinds of log lines, stream cursors, HTML escaping
// and the formats the pages and their scripts share.
#include "server/dashboard.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/dashboard_data.h"
#include "server/dashboard_pages.h"
#include "server/dashboard_streams.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::StepMetrics Step(int rank, int attempt, int64_t step, double wall_s) {
  v1::StepMetrics m;
  m.set_rank(rank);
  m.set_attempt(attempt);
  m.set_step(step);
  m.set_wall_time_s(wall_s);
  return m;
}

v1::LogLine Line(const std::string& source, const std::string& message) {
  v1::LogLine line;
  line.set_source(source);
  line.set_message(message);
  return line;
}

TEST(DashboardTest, DownsampleKeepsEndsAndBound) {
  LossCurve curve;
  for (int i = 0; i < 1000; ++i) curve.push_back({i, 1.0 / (i + 1)});
  LossCurve small = Downsample(curve, 200);
  ASSERT_EQ(small.size(), 200u);
  EXPECT_EQ(small.front().first, 0);
  EXPECT_EQ(small.back().first, 999);
  for (size_t i = 1; i < small.size(); ++i) EXPECT_LT(small[i - 1].first, small[i].first);
  EXPECT_EQ(Downsample(LossCurve{{1, 2.0}}, 200).size(), 1u);
}

TEST(DashboardTest, EtaFollowsRankZeroOfTheCurrentAttempt) {
  // Attempt 0 ran at 10 s a step; attempt 1 resumed at step 4 and runs at 2 s a step. Rank 1's
  // clock is far off and must not count.
  std::vector<v1::StepMetrics> rows = {Step(0, 0, 4, 40),  Step(0, 0, 5, 50),  Step(0, 1, 4, 100),
                                       Step(1, 1, 5, 999), Step(0, 1, 5, 102), Step(0, 1, 6, 104)};
  auto eta = EstimateSecondsLeft(rows, 1, 10);
  ASSERT_TRUE(eta.has_value());
  EXPECT_DOUBLE_EQ(*eta, 8.0);  // 4 steps left at 2 s
  EXPECT_FALSE(EstimateSecondsLeft({Step(0, 1, 4, 100)}, 1, 10).has_value());  // one step
  EXPECT_FALSE(EstimateSecondsLeft(rows, 2, 10).has_value());                  // no such attempt
}

TEST(DashboardTest, EtaAveragesOverTheLastWindowOnly) {
  std::vector<v1::StepMetrics> rows;
  // 100 slow steps (10 s), then kEtaWindowSteps fast ones (1 s).
  double wall = 0;
  for (int64_t s = 1; s <= 100; ++s) rows.push_back(Step(0, 0, s, wall += 10));
  for (int64_t s = 101; s <= 100 + kEtaWindowSteps; ++s) rows.push_back(Step(0, 0, s, wall += 1));
  auto eta = EstimateSecondsLeft(rows, 0, 100 + kEtaWindowSteps + 50);
  ASSERT_TRUE(eta.has_value());
  EXPECT_DOUBLE_EQ(*eta, 50.0);
}

TEST(DashboardTest, EventKindsOfLogLines) {
  EXPECT_EQ(EventKind(Line("coordinator", "checkpoint at step 5 (rank 0): /ck/5")), "checkpoint");
  EXPECT_EQ(EventKind(Line("coordinator",
                           "attempt 0 failed: trainer exited with code 1 (restart 1 of 3); "
                           "retrying as attempt 1, resuming from /ck/5")),
            "restart");
  EXPECT_EQ(EventKind(Line("trainer", "CUDA out of memory at micro batch 4; retrying with 2")),
            "oom");
  EXPECT_EQ(EventKind(Line("coordinator", "eval at step 4: eval_loss 2.5000, perplexity 12.182")),
            "eval");
  EXPECT_EQ(
      EventKind(Line("coordinator", "attempt 0 assigned to worker w (worker-1) as rank 0 of 1")),
      "state");
  EXPECT_EQ(EventKind(Line("coordinator", "completed; adapter at /out/adapter")), "state");
  EXPECT_EQ(EventKind(Line("trainer", "step 3 loss 2.1")), "");
  // Only the coordinator's own words count as events; a trainer line saying "completed" is a log.
  EXPECT_EQ(EventKind(Line("trainer", "completed tokenization")), "");
}

TEST(DashboardTest, StreamCursorsRoundTripAndBadOnesNameTheirSource) {
  auto cursor = ParseStreamCursor(FormatStreamCursor({42, 7}), "after");
  ASSERT_TRUE(cursor.ok());
  EXPECT_EQ(cursor->metrics, 42);
  EXPECT_EQ(cursor->log_seq, 7);
  auto empty = ParseStreamCursor("", "after");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->metrics, 0);
  for (const char* bad : {"42", "a:1", "1:", "-1:2", "1:2:3"}) {
    auto parsed = ParseStreamCursor(bad, "Last-Event-ID");
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_THAT(parsed.status().message(), HasSubstr("Last-Event-ID")) << bad;
  }
}

TEST(DashboardTest, HtmlAndScriptEscaping) {
  EXPECT_EQ(HtmlEscape(R"(<b a="x">&'</b>)"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;&lt;/b&gt;");
  const std::string json = ScriptSafeJson({{"name", "</script><script>alert(1)</script>"}});
  EXPECT_THAT(json, Not(HasSubstr("</")));
  EXPECT_EQ(nlohmann::json::parse(json)["name"], "</script><script>alert(1)</script>");
}

TEST(DashboardTest, FormatsMatchTheScripts) {
  // server/dashboard/common.js has the twins of these; the Chromium test reads both.
  EXPECT_EQ(FormatLoss(2.34125), "2.3413");
  EXPECT_EQ(FormatDuration(35), "0:35");
  EXPECT_EQ(FormatDuration(3723), "1:02:03");
  EXPECT_EQ(FormatDuration(-1), "");
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(int64_t{3} << 29), "1.50 GiB");
  EXPECT_EQ(FormatUtcTime(0), "");
  EXPECT_EQ(FormatUtcTime(86400000), "1970-01-02 00:00:00 UTC");
}

TEST(DashboardTest, ServerSentEventFraming) {
  EXPECT_EQ(SseEvent("metrics", "{}", "3:4"), "id: 3:4\nevent: metrics\ndata: {}\n\n");
  EXPECT_EQ(SseEvent("end", "{}"), "event: end\ndata: {}\n\n");
}

TEST(DashboardTest, JobPageEscapesWhatTheUserWrote) {
  JobDetail detail;
  detail.row.job.set_id("job-1");
  detail.row.job.set_name("<img src=x onerror=alert(1)>");
  detail.row.job.set_spec_yaml("name: </script>");
  const std::string html = JobPageHtml(detail, "\"><script>");
  EXPECT_THAT(html, HasSubstr("data-csrf=\"&quot;&gt;&lt;script&gt;\""));
  EXPECT_THAT(html, Not(HasSubstr("<img src=x")));
  EXPECT_THAT(html, HasSubstr("&lt;img src=x onerror=alert(1)&gt;"));
  EXPECT_THAT(html, HasSubstr("name: &lt;/script&gt;"));
}

}  // namespace
}  // namespace qlorad::server::testing
