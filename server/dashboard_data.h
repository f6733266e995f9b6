// What the dashboard shows, read from the coordinator and its store: the newest jobs with their
// ETAs, and one job in full (spec, metrics of every rank thinned for charts, log tail, events).
// The pages, the JSON API and the event streams all read through here, so they agree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/auth.h"
#include "server/coordinator.h"
#include "server/dashboard.h"

namespace qlorad::server {

// Where a job's event stream has got to: the metrics row id and the log seq last sent. The
// stream's SSE event ids carry it as "METRICS:LOG", so a reconnecting browser resumes there.
struct JobStreamCursor {
  int64_t metrics = 0;
  int64_t log_seq = 0;
};
std::string FormatStreamCursor(const JobStreamCursor& cursor);
// "" -> {0, 0}; anything not of the form above: INVALID_ARGUMENT naming `what`.
StatusOr<JobStreamCursor> ParseStreamCursor(const std::string& text, const std::string& what);

struct JobDetail {
  JobRow row;                            // the job with its spec
  std::vector<v1::StepMetrics> metrics;  // every rank, oldest first, at most kChartPoints each
  std::vector<v1::LogLine> log_tail;     // the last kLogTail lines
  std::vector<v1::LogLine> events;       // the last kEvents lines with an EventKind
  JobStreamCursor cursor;                // what the above covers
};

class DashboardData {
 public:
  // Jobs listed with per-job series: the newest ones, so a long history stays cheap.
  static constexpr int kJobsShown = 50;
  static constexpr size_t kChartPoints = 1000;  // per rank
  static constexpr size_t kLogTail = 200;
  static constexpr size_t kEvents = 200;

  // What `viewer` may see (auth.h): their own jobs, or every job for an admin.
  explicit DashboardData(Coordinator& coordinator, Principal viewer = LocalAdmin())
      : coordinator_(coordinator), viewer_(std::move(viewer)) {}

  // The newest kJobsShown jobs, newest first, with the ETA of those running.
  StatusOr<std::vector<JobRow>> NewestJobs();
  // The job with its spec and ETA; PERMISSION_DENIED when it is not the viewer's.
  StatusOr<JobRow> Job(const std::string& job_id);
  StatusOr<JobDetail> Detail(const std::string& job_id);

 private:
  std::optional<double> Eta(const v1::Job& job);

  Coordinator& coordinator_;
  const Principal viewer_;
};

}  // namespace qlorad::server
