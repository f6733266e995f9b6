// Carries trainer events to the coordinator: in order, in batches, retrying while the coordinator
// is unreachable. Push never blocks on the network, so the pipe readers never stall the trainer.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "common/status.h"
#include "qlorad/v1/workers.pb.h"

namespace qlorad::agent {

class EventReporter {
 public:
  // Sends one batch; an error means "not delivered, try again".
  using SendFn = std::function<Status(const std::vector<v1::TrainerEvent>& batch)>;

  struct Options {
    std::chrono::milliseconds flush_interval{200};  // an event waits at most this long to go out
    std::size_t max_batch = 64;
    std::chrono::milliseconds initial_backoff{100};
    std::chrono::milliseconds max_backoff{5000};
  };

  EventReporter(SendFn send, Options options);
  ~EventReporter();  // Stop(now)
  EventReporter(const EventReporter&) = delete;
  EventReporter& operator=(const EventReporter&) = delete;

  void Push(v1::TrainerEvent event);
  // Sends what is queued, retrying until `deadline`, then stops the sender. Returns how many
  // events could not be delivered (0 unless the coordinator stayed away).
  std::size_t Stop(std::chrono::steady_clock::time_point deadline);
  std::size_t Pending() const;
  // The (job, attempt, rank) of the queued events, in queue order, with the newest step queued
  // for each: a worker registering again reports these too, so a restarted coordinator adopts
  // an attempt whose trainer ended while it was away and takes its remaining events.
  std::vector<v1::RunningAttempt> UndeliveredAttempts() const;

 private:
  void Loop();
  // Waits until a batch is due; false when stopping with an empty queue or past the deadline.
  bool WaitForBatch(std::unique_lock<std::mutex>& lock);

  SendFn send_;
  Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::TrainerEvent> queue_;
  std::chrono::steady_clock::time_point oldest_pushed_;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point stop_deadline_;
  std::thread thread_;
};

}  // namespace qlorad::agent
