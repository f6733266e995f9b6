#include "worker/agent/event_reporter.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace qlorad::agent {

EventReporter::EventReporter(SendFn send, Options options)
    : send_(std::move(send)), options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

EventReporter::~EventReporter() {
  Stop(std::chrono::steady_clock::now());
}

void EventReporter::Push(v1::TrainerEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.empty()) oldest_pushed_ = std::chrono::steady_clock::now();
    queue_.push_back(std::move(event));
  }
  cv_.notify_all();
}

std::size_t EventReporter::Stop(std::chrono::steady_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      stopping_ = true;
      stop_deadline_ = deadline;
    }
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

std::size_t EventReporter::Pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

std::vector<v1::RunningAttempt> EventReporter::UndeliveredAttempts() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::RunningAttempt> attempts;
  for (const v1::TrainerEvent& event : queue_) {
    auto same = std::find_if(attempts.begin(), attempts.end(), [&](const v1::RunningAttempt& a) {
      return a.job_id() == event.job_id() && a.attempt() == event.attempt() &&
             a.rank() == event.rank();
    });
    if (same == attempts.end()) {
      same = attempts.emplace(attempts.end());
      same->set_job_id(event.job_id());
      same->set_attempt(event.attempt());
      same->set_rank(event.rank());
    }
    if (event.has_metrics()) same->set_last_step(event.metrics().step());
  }
  return attempts;
}

bool EventReporter::WaitForBatch(std::unique_lock<std::mutex>& lock) {
  while (true) {
    if (stopping_) {
      return !queue_.empty() && std::chrono::steady_clock::now() < stop_deadline_;
    }
    if (queue_.size() >= options_.max_batch) return true;
    if (queue_.empty()) {
      cv_.wait(lock);
      continue;
    }
    const auto due = oldest_pushed_ + options_.flush_interval;
    if (std::chrono::steady_clock::now() >= due) return true;
    cv_.wait_until(lock, due);
  }
}

void EventReporter::Loop() {
  auto backoff = options_.initial_backoff;
  std::unique_lock<std::mutex> lock(mu_);
  while (WaitForBatch(lock)) {
    const std::size_t n = std::min(queue_.size(), options_.max_batch);
    std::vector<v1::TrainerEvent> batch(queue_.begin(), queue_.begin() + static_cast<long>(n));
    lock.unlock();
    const Status sent = send_(batch);
    lock.lock();
    if (sent.ok()) {
      // Only this thread pops, so the first n entries are still the ones just sent.
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<long>(n));
      backoff = options_.initial_backoff;
      continue;
    }
    spdlog::warn("reporting {} events failed ({} queued), retrying in {} ms: {}", n, queue_.size(),
                 backoff.count(), sent.ToString());
    // Wait out the backoff, but retry at once when a stop begins and never sleep past its
    // deadline, so shutdown gets its last chance to deliver.
    const bool was_stopping = stopping_;
    auto retry_at = std::chrono::steady_clock::now() + backoff;
    if (stopping_) retry_at = std::min(retry_at, stop_deadline_);
    cv_.wait_until(lock, retry_at, [&] { return stopping_ != was_stopping; });
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

}  // namespace qlorad::agent
