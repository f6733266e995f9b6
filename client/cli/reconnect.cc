#include "client/cli/reconnect.h"

#include <algorithm>

namespace qlorad::cli {

bool IsReconnectable(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::CANCELLED;
}

std::optional<std::chrono::milliseconds> ReconnectBackoff::NextWait(Clock::time_point now) {
  if (!lost_since_) {
    lost_since_ = now;
    wait_ = kFirstWait;
    tries_ = 0;
  } else {
    wait_ = std::min(wait_ * 2, kMaxWait);
  }
  const auto left = give_up_after_ - (now - *lost_since_);
  if (left <= Clock::duration::zero()) return std::nullopt;
  ++tries_;
  // The last wait ends when the outage's time is up, not a full wait later.
  return std::min(wait_, std::chrono::ceil<std::chrono::milliseconds>(left));
}

}  // namespace qlorad::cli
