// Fan-out of live job events (StepMetrics, LogLines) to the streams that follow a job.
//
// Publishing never blocks on a reader: each subscriber has a bounded queue, and when it is
// full the subscriber is marked `overflowed` and its queue dropped. The stream then re-reads
// from SQLite after the last cursor it sent (everything published was stored first), so a slow
// reader loses nothing and the ReportEvents path pays one failed push, not a wait.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "server/store.h"

namespace qlorad::server {

template <typename T>
class Hub {
 public:
  // What a subscriber gets from one Wait: new items, whether it must re-read the store, and
  // whether the job is finished (nothing more will be published) or the hub is closing.
  struct Batch {
    std::vector<Stored<T>> items;
    bool overflowed = false;
    bool finished = false;
    bool closed = false;
  };

  class Subscription;

  explicit Hub(size_t queue_capacity) : capacity_(queue_capacity) {}

  std::unique_ptr<Subscription> Subscribe(const std::string& job_id) {
    auto state = std::make_shared<State>();
    std::lock_guard<std::mutex> lock(mu_);
    state->closed = closed_;
    subscribers_[job_id].insert(state);
    return std::unique_ptr<Subscription>(new Subscription(this, job_id, state));
  }

  void Publish(const std::string& job_id, int64_t cursor, const T& value) {
    Deliver(job_id, [&](State& s) {
      if (s.overflowed) return;
      if (s.queue.size() >= capacity_) {
        s.overflowed = true;
        s.queue.clear();
        return;
      }
      s.queue.push_back(Stored<T>{cursor, value});
    });
  }

  // The job is terminal: subscribers drain what they have and end.
  void Finish(const std::string& job_id) {
    Deliver(job_id, [](State& s) { s.finished = true; });
  }

  // The coordinator is shutting down: every subscriber ends now.
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    for (auto& [job, states] : subscribers_) {
      for (const auto& s : states) {
        std::lock_guard<std::mutex> slock(s->mu);
        s->closed = true;
        s->cv.notify_all();
      }
    }
  }

  size_t subscriber_count() {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (auto& [job, states] : subscribers_) n += states.size();
    return n;
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Stored<T>> queue;
    bool overflowed = false;
    bool finished = false;
    bool closed = false;
  };

  template <typename F>
  void Deliver(const std::string& job_id, F apply) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = subscribers_.find(job_id);
    if (it == subscribers_.end()) return;
    for (const auto& s : it->second) {
      std::lock_guard<std::mutex> slock(s->mu);
      apply(*s);
      s->cv.notify_all();
    }
  }

  void Unsubscribe(const std::string& job_id, const std::shared_ptr<State>& state) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = subscribers_.find(job_id);
    if (it == subscribers_.end()) return;
    it->second.erase(state);
    if (it->second.empty()) subscribers_.erase(it);
  }

  const size_t capacity_;
  std::mutex mu_;
  bool closed_ = false;
  std::map<std::string, std::set<std::shared_ptr<State>>> subscribers_;

 public:
  class Subscription {
   public:
    Subscription(const Subscription&) = delete;
    Subscription& operator=(const Subscription&) = delete;
    ~Subscription() { hub_->Unsubscribe(job_id_, state_); }

    // Waits up to `timeout` for anything new and takes all of it.
    Batch Wait(std::chrono::milliseconds timeout) {
      std::unique_lock<std::mutex> lock(state_->mu);
      state_->cv.wait_for(lock, timeout, [&] {
        return !state_->queue.empty() || state_->overflowed || state_->finished || state_->closed;
      });
      Batch batch;
      batch.items.assign(state_->queue.begin(), state_->queue.end());
      state_->queue.clear();
      batch.overflowed = state_->overflowed;
      state_->overflowed = false;
      batch.finished = state_->finished;
      batch.closed = state_->closed;
      return batch;
    }

   private:
    friend class Hub;
    Subscription(Hub* hub, std::string job_id, std::shared_ptr<State> state)
        : hub_(hub), job_id_(std::move(job_id)), state_(std::move(state)) {}
    Hub* hub_;
    std::string job_id_;
    std::shared_ptr<State> state_;
  };
};

}  // namespace qlorad::server
