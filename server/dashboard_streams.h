// The dashboard's live updates as server-sent events (text/event-stream), free of the HTTP
// library: each stream object makes the next chunk of the response, waiting for news.
//
// JobEventStream (GET /api/jobs/ID/stream) is StreamMetrics and StreamLogs in one for the
// browser: replay from a cursor, then follow the job's hubs (metrics_hub.h) until the job is
// terminal and drained. As in stream_follow.h the store is the source of truth and the hubs only
// say "there is more", so a slow page loses nothing and never slows training. Each event's id is
// the cursor after it, so EventSource's reconnect (Last-Event-ID) resumes where it stopped.
//
// OverviewStream (GET /api/stream) follows the coordinator's change feed and sends the rows of
// the jobs table and the workers table that changed, rendered as the pages render them.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "server/coordinator.h"
#include "server/dashboard_data.h"

namespace qlorad::server {

// "id: ID\nevent: NAME\ndata: DATA\n\n" (no id line when `id` is empty); DATA holds no newline
// (it is compact JSON).
std::string SseEvent(const std::string& name, const std::string& data, const std::string& id = "");

// An idle stream sends a comment this often: proxies keep it open, and a page that went away
// is noticed by the failed write.
inline constexpr std::chrono::milliseconds kSseKeepAlive{5000};

class JobEventStream {
 public:
  JobEventStream(Coordinator& coordinator, std::string job_id, JobStreamCursor from);

  // Appends the next events to *out (waiting up to a fraction of a second for news); false
  // once the stream has ended: the job is terminal and all of it was sent (an `end` event),
  // the job does not exist or a read failed (an `error` event), or the coordinator is stopping.
  //
  // Events: `metrics` (MetricsJson of new rows), `logs` ({"lines":[LogLineJson],"log_html",
  // "events_html"}), `job` ({"job":JobJson,"summary_html"}, when it changed), `end`
  // ({"state"}), `error` ({"message"}).
  bool Next(std::string* out);

 private:
  bool Start(std::string* out);
  // Sends everything stored after the cursor, and the job when it changed; false on an error.
  bool Drain(std::string* out, bool* terminal);
  bool Fail(std::string* out, const Status& status);

  Coordinator& coordinator_;
  DashboardData data_;
  const std::string job_id_;
  JobStreamCursor cursor_;
  std::unique_ptr<MetricsHub::Subscription> metrics_;
  std::unique_ptr<LogHub::Subscription> logs_;
  std::string last_summary_;
  bool started_ = false;
  std::chrono::steady_clock::time_point last_sent_;
};

class OverviewStream {
 public:
  // Rows of the jobs `viewer` may see (auth.h).
  explicit OverviewStream(Coordinator& coordinator, Principal viewer = LocalAdmin());

  // As JobEventStream::Next; it ends only when the coordinator stops or a read fails.
  // Events: `jobs` ({"order":[ids newest first],"rows":{id: row html} for rows that changed}),
  // `workers` ({"html": the table's rows, "workers": WorkersJson}, when they changed).
  bool Next(std::string* out);

 private:
  bool Send(std::string* out);

  Coordinator& coordinator_;
  DashboardData data_;
  uint64_t seen_ = 0;
  bool started_ = false;
  std::map<std::string, std::string> rows_;  // what the page has, by job id
  std::string workers_html_;
  std::chrono::steady_clock::time_point last_read_;   // paces the re-reads
  std::chrono::steady_clock::time_point last_write_;  // paces the keep-alive comments
};

}  // namespace qlorad::server
