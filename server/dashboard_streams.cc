#include "server/dashboard_streams.h"

#include <thread>

#include "server/dashboard_pages.h"

namespace qlorad::server {
namespace {

// How long one Next waits for news: short, so a page that went away or a stopping server is
// noticed soon.
constexpr std::chrono::milliseconds kWait{200};
// Rows per store read while draining; each read becomes one event.
constexpr int kDrainPage = 512;
// The overview re-reads at most this often, however fast jobs step: one read covers every
// change before it.
constexpr std::chrono::milliseconds kOverviewMinInterval{250};

const std::string kKeepAliveComment = ": keep-alive\n\n";

}  // namespace

std::string SseEvent(const std::string& name, const std::string& data, const std::string& id) {
  std::string event;
  if (!id.empty()) event += "id: " + id + "\n";
  event += "event: " + name + "\ndata: " + data + "\n\n";
  return event;
}

JobEventStream::JobEventStream(Coordinator& coordinator, std::string job_id, JobStreamCursor from)
    : coordinator_(coordinator), data_(coordinator), job_id_(std::move(job_id)), cursor_(from) {}

bool JobEventStream::Fail(std::string* out, const Status& status) {
  *out += SseEvent("error", nlohmann::json{{"message", status.ToString()}}.dump());
  return false;
}

bool JobEventStream::Start(std::string* out) {
  started_ = true;
  last_sent_ = std::chrono::steady_clock::now();
  // Subscribe before reading the store: anything committed later wakes this stream.
  metrics_ = coordinator_.metrics_hub().Subscribe(job_id_);
  logs_ = coordinator_.log_hub().Subscribe(job_id_);
  // retry: how long EventSource waits before it reconnects after a dropped connection.
  *out += "retry: 2000\n\n";
  bool terminal = false;
  if (!Drain(out, &terminal)) return false;
  if (terminal) {
    *out += SseEvent("end", "{}", FormatStreamCursor(cursor_));
    return false;
  }
  return true;
}

bool JobEventStream::Drain(std::string* out, bool* terminal) {
  // The job first: once it reads terminal, everything it stored is already in the store.
  auto row = data_.Job(job_id_);
  if (!row.ok()) return Fail(out, row.status());
  *terminal = IsTerminal(row->job.state());
  Store& store = coordinator_.store();
  while (true) {
    auto page = store.ReadMetrics(job_id_, 0, cursor_.metrics, kDrainPage);
    if (!page.ok()) return Fail(out, page.status());
    if (page->empty()) break;
    std::vector<v1::StepMetrics> rows;
    for (auto& r : *page) rows.push_back(std::move(r.value));
    cursor_.metrics = page->back().cursor;
    *out += SseEvent("metrics", MetricsJson(rows).dump(), FormatStreamCursor(cursor_));
  }
  while (true) {
    auto page = store.ReadLogs(job_id_, cursor_.log_seq, kDrainPage);
    if (!page.ok()) return Fail(out, page.status());
    if (page->empty()) break;
    nlohmann::json lines = nlohmann::json::array();
    std::string log_html, events_html;
    for (const auto& line : *page) {
      lines.push_back(LogLineJson(line.value));
      log_html += LogLineHtml(line.value) + "\n";
      if (!EventKind(line.value).empty()) events_html += EventItemHtml(line.value);
    }
    cursor_.log_seq = page->back().cursor;
    const nlohmann::json event = {
        {"lines", std::move(lines)}, {"log_html", log_html}, {"events_html", events_html}};
    *out += SseEvent("logs", event.dump(), FormatStreamCursor(cursor_));
  }
  std::string summary = JobSummaryHtml(*row);
  if (summary != last_summary_) {
    const nlohmann::json event = {{"job", JobJson(*row)}, {"summary_html", summary}};
    *out += SseEvent("job", event.dump(), FormatStreamCursor(cursor_));
    last_summary_ = std::move(summary);
  }
  return true;
}

bool JobEventStream::Next(std::string* out) {
  if (!started_) return Start(out);
  auto metrics = metrics_->Wait(kWait);
  auto logs = logs_->Wait(std::chrono::milliseconds(0));
  if (metrics.closed || logs.closed) return false;  // the coordinator is stopping
  const bool news = !metrics.items.empty() || metrics.overflowed || metrics.finished ||
                    !logs.items.empty() || logs.overflowed || logs.finished;
  const auto now = std::chrono::steady_clock::now();
  if (!news) {
    if (now - last_sent_ >= kSseKeepAlive) {
      *out += kKeepAliveComment;
      last_sent_ = now;
    }
    return true;
  }
  last_sent_ = now;
  bool terminal = false;
  if (!Drain(out, &terminal)) return false;
  if (terminal) {
    *out += SseEvent("end", "{}", FormatStreamCursor(cursor_));
    return false;
  }
  return true;
}

OverviewStream::OverviewStream(Coordinator& coordinator, Principal viewer)
    : coordinator_(coordinator), data_(coordinator, std::move(viewer)) {}

bool OverviewStream::Send(std::string* out) {
  auto jobs = data_.NewestJobs();
  if (!jobs.ok()) {
    *out += SseEvent("error", nlohmann::json{{"message", jobs.status().ToString()}}.dump());
    return false;
  }
  nlohmann::json order = nlohmann::json::array();
  nlohmann::json changed = nlohmann::json::object();
  std::map<std::string, std::string> rows;
  for (const JobRow& row : *jobs) {
    const std::string& id = row.job.id();
    order.push_back(id);
    std::string html = JobRowHtml(row);
    auto had = rows_.find(id);
    if (had == rows_.end() || had->second != html) changed[id] = html;
    rows.emplace(id, std::move(html));
  }
  if (!started_ || !changed.empty() || rows.size() != rows_.size()) {
    *out += SseEvent("jobs", nlohmann::json{{"order", order}, {"rows", changed}}.dump());
  }
  rows_ = std::move(rows);
  const std::vector<WorkerView> workers = coordinator_.Workers();
  std::string html = WorkerRowsHtml(workers);
  if (!started_ || html != workers_html_) {
    const nlohmann::json event = {{"html", html}, {"workers", WorkersJson(workers)["workers"]}};
    *out += SseEvent("workers", event.dump());
    workers_html_ = std::move(html);
  }
  started_ = true;
  return true;
}

bool OverviewStream::Next(std::string* out) {
  const size_t before = out->size();
  bool more = true;
  if (!started_) {
    *out += "retry: 2000\n\n";
    seen_ = coordinator_.changes().version();  // before reading: a later change is not missed
    last_read_ = std::chrono::steady_clock::now();
    more = Send(out);
  } else {
    const auto since = std::chrono::steady_clock::now() - last_read_;
    if (since < kOverviewMinInterval) std::this_thread::sleep_for(kOverviewMinInterval - since);
    const uint64_t version = coordinator_.changes().WaitPast(seen_, kWait);
    if (coordinator_.changes().closed()) return false;
    if (version != seen_) {
      seen_ = version;
      last_read_ = std::chrono::steady_clock::now();
      more = Send(out);
    }
  }
  const auto now = std::chrono::steady_clock::now();
  if (out->size() > before) {
    last_write_ = now;
  } else if (now - last_write_ >= kSseKeepAlive) {
    *out += kKeepAliveComment;
    last_write_ = now;
  }
  return more;
}

}  // namespace qlorad::server
