// When a follower (watch, submit --follow) loses the coordinator: which errors mean "gone for
// now", and how long to wait between tries. The waits double from 0.5 s up to 5 s, so a
// coordinator that restarts in a second is back in a second, and one that is down for long is
// not hammered; after `give_up_after` in all the follower stops.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <optional>

namespace qlorad::cli {

// UNAVAILABLE (no connection, or it dropped) and CANCELLED that we did not ask for (a
// coordinator shutting down cancels its streams).
bool IsReconnectable(const grpc::Status& status);

class ReconnectBackoff {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kFirstWait{500};
  static constexpr std::chrono::milliseconds kMaxWait{5000};

  explicit ReconnectBackoff(std::chrono::seconds give_up_after) : give_up_after_(give_up_after) {}

  // Starts (or continues) an outage at `now`; returns how long the next try may wait, or
  // nothing once give_up_after has passed since the outage began.
  std::optional<std::chrono::milliseconds> NextWait(Clock::time_point now);
  // The coordinator answered: the next outage starts from the first wait again.
  void Reset() { lost_since_.reset(); }
  bool lost() const { return lost_since_.has_value(); }
  int tries() const { return tries_; }

 private:
  std::chrono::seconds give_up_after_;
  std::optional<Clock::time_point> lost_since_;
  std::chrono::milliseconds wait_{0};
  int tries_ = 0;
};

}  // namespace qlorad::cli
