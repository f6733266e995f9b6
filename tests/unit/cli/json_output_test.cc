#include "client/cli/json_output.h"

#include <gtest/gtest.h>

#include <limits>

#include "qlorad/v1/common.pb.h"
#include "qlorad/v1/jobs.pb.h"

namespace qlorad::cli {
namespace {

TEST(ToJson, LogLineExactly) {
  qlorad::v1::LogLine line;
  line.set_job_id("job-1");
  line.set_seq(3);
  line.set_level("info");
  line.set_message("say \"hi\"");
  line.set_source("trainer");
  line.set_unix_ms(1'764'088'200'123);
  EXPECT_EQ(ToJson(line).dump(),
            R"({"job_id":"job-1","level":"info","message":"say \"hi\"","rank":0,"seq":3,)"
            R"("source":"trainer","unix_ms":1764088200123})");
}

TEST(ToJson, JobHasEveryFieldNumbersAsNumbersAndShortStates) {
  qlorad::v1::Job job;
  job.set_id("job-1");
  job.set_state(qlorad::v1::JOB_STATE_COMPLETED);
  job.set_last_step(int64_t{1} << 62);  // beyond a double's exact range: must stay exact
  job.set_last_loss(1.25);
  const nlohmann::json j = ToJson(job);
  EXPECT_EQ(j.size(), static_cast<size_t>(qlorad::v1::Job::descriptor()->field_count()));
  EXPECT_EQ(j.at("state"), "COMPLETED");
  ASSERT_TRUE(j.at("last_step").is_number_integer());
  EXPECT_EQ(j.at("last_step").get<int64_t>(), int64_t{1} << 62);
  EXPECT_EQ(j.at("last_loss").get<double>(), 1.25);
  EXPECT_EQ(j.at("error"), "");  // unset fields are present, with their default
  EXPECT_EQ(j.at("gpus"), 0);
}

// JSON has no NaN: a diverged loss is "NaN", as protobuf's JSON mapping writes it, and not null
// (which --json uses for an unset field).
TEST(ToJson, NonFiniteNumbersAreProtobufsStrings) {
  qlorad::v1::StepMetrics m;
  m.set_loss(std::numeric_limits<double>::quiet_NaN());
  m.set_grad_norm(std::numeric_limits<double>::infinity());
  m.set_eval_loss(-std::numeric_limits<double>::infinity());
  const nlohmann::json j = ToJson(m);
  EXPECT_EQ(j.at("loss"), "NaN");
  EXPECT_EQ(j.at("grad_norm"), "Infinity");
  EXPECT_EQ(j.at("eval_loss"), "-Infinity");
  EXPECT_TRUE(j.at("eval_perplexity").is_null());  // unset
  EXPECT_EQ(j.at("lr"), 0.0);
}

TEST(ToJson, RepeatedAndNestedFields) {
  qlorad::v1::ListJobsResponse response;
  response.add_jobs()->set_id("a");
  response.add_jobs()->set_id("b");
  const nlohmann::json j = ToJson(response);
  ASSERT_TRUE(j.at("jobs").is_array());
  ASSERT_EQ(j.at("jobs").size(), 2u);
  EXPECT_EQ(j["jobs"][1]["id"], "b");

  qlorad::v1::ListJobsRequest request;
  request.add_states(qlorad::v1::JOB_STATE_QUEUED);
  request.add_states(qlorad::v1::JOB_STATE_FAILED);
  EXPECT_EQ(ToJson(request).dump(),
            R"({"page_size":0,"page_token":"","states":["QUEUED","FAILED"]})");
}

}  // namespace
}  // namespace qlorad::cli
