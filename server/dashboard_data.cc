#include "server/dashboard_data.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <deque>
#include <map>

namespace qlorad::server {
namespace {

// Rows per store read; bounds one read's memory, not what is read.
constexpr int kReadPage = 4096;
// At most this many rows (all ranks and attempts) looked at for an ETA.
constexpr int kEtaRows = 1 << 16;

bool ParseInt(std::string_view text, int64_t& out) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size() && out >= 0;
}

}  // namespace

std::string FormatStreamCursor(const JobStreamCursor& cursor) {
  return std::to_string(cursor.metrics) + ":" + std::to_string(cursor.log_seq);
}

StatusOr<JobStreamCursor> ParseStreamCursor(const std::string& text, const std::string& what) {
  JobStreamCursor cursor;
  if (text.empty()) return cursor;
  const std::string_view view(text);
  const size_t colon = view.find(':');
  if (colon == std::string_view::npos || !ParseInt(view.substr(0, colon), cursor.metrics) ||
      !ParseInt(view.substr(colon + 1), cursor.log_seq)) {
    return InvalidArgument(what + ": expected METRICS_CURSOR:LOG_SEQ (two integers >= 0), got '" +
                           text + "'");
  }
  return cursor;
}

std::optional<double> DashboardData::Eta(const v1::Job& job) {
  if (job.state() != v1::JOB_STATE_RUNNING || job.last_step() <= 0) return std::nullopt;
  auto recent = coordinator_.store().ReadMetrics(
      job.id(), std::max<int64_t>(0, job.last_step() - kEtaWindowSteps), 0, kEtaRows);
  if (!recent.ok()) {
    // An ETA is a nicety: the page still shows the job without one.
    spdlog::warn("dashboard: no ETA for {}: {}", job.id(), recent.status().ToString());
    return std::nullopt;
  }
  std::vector<v1::StepMetrics> rows;
  for (auto& r : *recent) rows.push_back(std::move(r.value));
  return EstimateSecondsLeft(rows, job.attempt(), job.total_steps());
}

StatusOr<std::vector<JobRow>> DashboardData::NewestJobs() {
  QLORAD_ASSIGN_OR_RETURN(JobPage page,
                          coordinator_.ListJobs({}, kJobsShown, "", VisibleOwner(viewer_)));
  std::vector<JobRow> rows;
  for (v1::Job& job : page.jobs) {
    std::optional<double> eta = Eta(job);
    rows.push_back({std::move(job), eta});
  }
  return rows;
}

StatusOr<JobRow> DashboardData::Job(const std::string& job_id) {
  QLORAD_ASSIGN_OR_RETURN(v1::Job job, coordinator_.GetJob(job_id));
  QLORAD_RETURN_IF_ERROR(CheckJobAccess(viewer_, job));
  std::optional<double> eta = Eta(job);
  return JobRow{std::move(job), eta};
}

StatusOr<JobDetail> DashboardData::Detail(const std::string& job_id) {
  // Checked before anything of the job is read; Job() below reads it again after the cursors.
  QLORAD_RETURN_IF_ERROR(Job(job_id).status());
  JobDetail detail;
  // Cursors first, then the job: a step stored in between is sent again by the stream, which
  // charts it once (the page keys points by rank and step).
  Store& store = coordinator_.store();
  std::map<int, std::vector<v1::StepMetrics>> by_rank;
  while (true) {
    QLORAD_ASSIGN_OR_RETURN(auto page,
                            store.ReadMetrics(job_id, 0, detail.cursor.metrics, kReadPage));
    if (page.empty()) break;
    for (auto& row : page) by_rank[row.value.rank()].push_back(std::move(row.value));
    detail.cursor.metrics = page.back().cursor;
  }
  for (auto& [rank, rows] : by_rank) {
    // Evaluated steps are few and each is a point of the eval curve: all of them stay.
    std::vector<v1::StepMetrics> evaluated, plain;
    for (auto& row : rows) (row.has_eval_loss() ? evaluated : plain).push_back(std::move(row));
    std::vector<v1::StepMetrics> kept = Thin(plain, kChartPoints);
    kept.insert(kept.end(), evaluated.begin(), evaluated.end());
    std::stable_sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) {
      return a.attempt() != b.attempt() ? a.attempt() < b.attempt() : a.step() < b.step();
    });
    for (auto& row : kept) detail.metrics.push_back(std::move(row));
  }
  std::deque<v1::LogLine> tail, events;
  while (true) {
    QLORAD_ASSIGN_OR_RETURN(auto page, store.ReadLogs(job_id, detail.cursor.log_seq, kReadPage));
    if (page.empty()) break;
    for (auto& line : page) {
      if (!EventKind(line.value).empty()) {
        events.push_back(line.value);
        if (events.size() > kEvents) events.pop_front();
      }
      tail.push_back(std::move(line.value));
      if (tail.size() > kLogTail) tail.pop_front();
    }
    detail.cursor.log_seq = page.back().cursor;
  }
  detail.log_tail.assign(tail.begin(), tail.end());
  detail.events.assign(events.begin(), events.end());
  QLORAD_ASSIGN_OR_RETURN(detail.row, Job(job_id));
  return detail;
}

}  // namespace qlorad::server
