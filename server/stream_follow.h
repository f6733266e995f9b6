// Replay-then-follow for the job streams (StreamMetrics, StreamLogs): everything stored after
// the starting cursor, then live items from the hub, until the job is terminal and drained.
// SQLite is the source of truth; the hub only says "there is more" quickly. When a slow reader's
// queue overflowed, or the job finished, the stream re-reads the store from its cursor, so no
// item is lost or sent twice (items at or before the cursor are skipped).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "server/coordinator.h"
#include "server/status_mapping.h"

namespace qlorad::server {

template <typename T>
class FollowStream {
 public:
  using ReadPage = std::function<StatusOr<std::vector<Stored<T>>>(int64_t after_cursor)>;
  using Wanted = std::function<bool(const T&)>;

  FollowStream(Coordinator& coordinator, Hub<T>& hub, std::string job_id, int64_t start_cursor,
               ReadPage read_page, Wanted wanted)
      : coordinator_(coordinator),
        hub_(hub),
        job_id_(std::move(job_id)),
        cursor_(start_cursor),
        read_page_(std::move(read_page)),
        wanted_(std::move(wanted)) {}

  // Everything stored after the starting cursor, then the end of the stream, whatever the job's
  // state (StreamMetricsRequest.stored_only).
  grpc::Status Replay(grpc::ServerWriter<T>* writer) { return Drain(writer); }

  grpc::Status Run(grpc::ServerContext* context, grpc::ServerWriter<T>* writer) {
    // Subscribe before looking at the store: anything committed later reaches the queue.
    auto subscription = hub_.Subscribe(job_id_);
    auto job = coordinator_.GetJob(job_id_);
    if (!job.ok()) return ToGrpcStatus(job.status());
    const bool terminal = IsTerminal(job->state());
    if (grpc::Status s = Drain(writer); !s.ok() || terminal) return s;
    while (true) {
      if (context->IsCancelled()) return {grpc::StatusCode::CANCELLED, "the client went away"};
      auto batch = subscription->Wait(kPollInterval);
      if (batch.closed) return {grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down"};
      if (batch.overflowed || batch.finished) {
        if (grpc::Status s = Drain(writer); !s.ok() || batch.finished) return s;
        continue;
      }
      for (const auto& item : batch.items) {
        if (item.cursor <= cursor_) continue;
        if (wanted_(item.value) && !writer->Write(item.value)) return ClientGone();
        cursor_ = item.cursor;
      }
    }
  }

 private:
  // Short enough that a cancelled client or a shutdown is noticed quickly.
  static constexpr std::chrono::milliseconds kPollInterval{200};

  static grpc::Status ClientGone() { return {grpc::StatusCode::CANCELLED, "the client went away"}; }

  grpc::Status Drain(grpc::ServerWriter<T>* writer) {
    while (true) {
      auto page = read_page_(cursor_);
      if (!page.ok()) return ToGrpcStatus(page.status());
      if (page->empty()) return grpc::Status::OK;
      for (const auto& row : *page) {
        if (!writer->Write(row.value)) return ClientGone();
        cursor_ = row.cursor;
      }
    }
  }

  Coordinator& coordinator_;
  Hub<T>& hub_;
  const std::string job_id_;
  int64_t cursor_;
  ReadPage read_page_;
  Wanted wanted_;
};

}  // namespace qlorad::server
