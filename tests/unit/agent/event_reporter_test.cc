#include "worker/agent/event_reporter.h"

#include <gtest/gtest.h>

#include <mutex>
#include <vector>

#include "tests/unit/agent/script_fixture.h"

namespace qlorad::agent {
namespace {

using testing::WaitUntil;
using namespace std::chrono_literals;

v1::TrainerEvent Step(int64_t step) {
  v1::TrainerEvent e;
  e.set_job_id("j");
  e.mutable_metrics()->set_step(step);
  return e;
}

// The receiving end: records delivered batches and refuses the first `fail_first` attempts,
// as a coordinator that is down would.
class Receiver {
 public:
  explicit Receiver(int fail_first = 0) : fail_left_(fail_first) {}
  EventReporter::SendFn Fn() {
    return [this](const std::vector<v1::TrainerEvent>& batch) {
      std::lock_guard<std::mutex> lock(mu_);
      ++attempts_;
      if (fail_left_ > 0) {
        --fail_left_;
        return Unavailable("coordinator down");
      }
      batches_.push_back(batch);
      return Status::Ok();
    };
  }
  std::vector<std::vector<v1::TrainerEvent>> Batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }
  std::vector<int64_t> Steps() {
    std::vector<int64_t> steps;
    for (const auto& b : Batches()) {
      for (const auto& e : b) steps.push_back(e.metrics().step());
    }
    return steps;
  }
  int Attempts() {
    std::lock_guard<std::mutex> lock(mu_);
    return attempts_;
  }

 private:
  std::mutex mu_;
  int fail_left_;
  int attempts_ = 0;
  std::vector<std::vector<v1::TrainerEvent>> batches_;
};

std::vector<int64_t> Range(int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(i);
  return v;
}

TEST(EventReporterTest, ASingleEventGoesOutWithinTheFlushInterval) {
  Receiver receiver;
  EventReporter reporter(receiver.Fn(), {.flush_interval = 200ms});
  const auto t0 = std::chrono::steady_clock::now();
  reporter.Push(Step(1));
  ASSERT_TRUE(WaitUntil([&] { return receiver.Steps().size() == 1; }, 2s));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 150ms) << "should have waited for more events to batch";
  EXPECT_LT(took, 1s);
}

TEST(EventReporterTest, FullBatchesGoOutAtOnceInOrder) {
  Receiver receiver;
  // A long interval: only the batch size can make these go out quickly.
  EventReporter reporter(receiver.Fn(), {.flush_interval = 60s, .max_batch = 64});
  for (int64_t i = 0; i < 128; ++i) reporter.Push(Step(i));
  ASSERT_TRUE(WaitUntil([&] { return receiver.Steps().size() == 128; }, 5s));
  EXPECT_EQ(receiver.Steps(), Range(128));
  for (const auto& batch : receiver.Batches()) EXPECT_LE(batch.size(), 64u);
}

TEST(EventReporterTest, RetriesWhileTheCoordinatorIsDownAndLosesNothing) {
  Receiver receiver(/*fail_first=*/3);
  EventReporter reporter(
      receiver.Fn(),
      {.flush_interval = 10ms, .max_batch = 16, .initial_backoff = 20ms, .max_backoff = 50ms});
  for (int64_t i = 0; i < 100; ++i) reporter.Push(Step(i));
  ASSERT_TRUE(WaitUntil([&] { return receiver.Steps().size() == 100; }, 5s));
  EXPECT_EQ(receiver.Steps(), Range(100));
  EXPECT_GE(receiver.Attempts(), 3 + 100 / 16);
  EXPECT_EQ(reporter.Pending(), 0u);
}

TEST(EventReporterTest, UndeliveredAttemptsNameWhatIsStillQueued) {
  Receiver receiver(/*fail_first=*/1000);  // the coordinator is away throughout
  EventReporter reporter(receiver.Fn(), {.flush_interval = 10ms, .initial_backoff = 1s});
  reporter.Push(Step(3));
  reporter.Push(Step(4));
  v1::TrainerEvent other = Step(9);
  other.set_job_id("k");
  other.set_attempt(2);
  reporter.Push(other);
  const std::vector<v1::RunningAttempt> attempts = reporter.UndeliveredAttempts();
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0].job_id(), "j");
  EXPECT_EQ(attempts[0].last_step(), 4);
  EXPECT_EQ(attempts[1].job_id(), "k");
  EXPECT_EQ(attempts[1].attempt(), 2);
  EXPECT_EQ(attempts[1].last_step(), 9);
}

TEST(EventReporterTest, StopFlushesWhatIsQueued) {
  Receiver receiver;
  EventReporter reporter(receiver.Fn(), {.flush_interval = 60s});
  for (int64_t i = 0; i < 10; ++i) reporter.Push(Step(i));
  EXPECT_EQ(reporter.Stop(std::chrono::steady_clock::now() + 5s), 0u);
  EXPECT_EQ(receiver.Steps(), Range(10));
}

TEST(EventReporterTest, StopGivesUpAtTheDeadlineAndCountsWhatWasLeft) {
  Receiver receiver(/*fail_first=*/1000000);
  EventReporter reporter(receiver.Fn(), {.flush_interval = 1ms, .initial_backoff = 10ms});
  for (int64_t i = 0; i < 5; ++i) reporter.Push(Step(i));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(reporter.Stop(t0 + 300ms), 5u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

}  // namespace
}  // namespace qlorad::agent
