#include "server/stream_limiter.h"

#include <fmt/format.h>

namespace qlorad::server {

StreamLimiter::Slot::Slot(Slot&& other) noexcept
    : limiter_(other.limiter_), client_(std::move(other.client_)) {
  other.limiter_ = nullptr;
}

StreamLimiter::Slot::~Slot() {
  if (limiter_) limiter_->Release(client_);
}

std::optional<StreamLimiter::Slot> StreamLimiter::TryAcquire(const std::string& client,
                                                             std::string* refusal) {
  std::lock_guard<std::mutex> lock(mu_);
  // Per client first: a client at its own cap is told so, even when the total is also reached.
  auto it = per_client_.find(client);
  const int mine = it == per_client_.end() ? 0 : it->second;
  if (mine >= limits_.max_per_client) {
    *refusal = fmt::format(
        "too many streams from {}: {} are open, the most one client may have "
        "(qlorad --max-streams-per-client); close one first",
        client, mine);
    return std::nullopt;
  }
  if (total_ >= limits_.max_total) {
    *refusal = fmt::format(
        "the coordinator has {} streams open, the most it serves at once (qlorad --max-streams); "
        "try again later",
        total_);
    return std::nullopt;
  }
  ++total_;
  ++per_client_[client];
  return Slot(this, client);
}

void StreamLimiter::Release(const std::string& client) {
  std::lock_guard<std::mutex> lock(mu_);
  --total_;
  auto it = per_client_.find(client);
  if (it != per_client_.end() && --it->second == 0) per_client_.erase(it);
}

int StreamLimiter::open_total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_;
}

int StreamLimiter::open_for(const std::string& client) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = per_client_.find(client);
  return it == per_client_.end() ? 0 : it->second;
}

std::string ClientOfPeer(const std::string& peer) {
  const bool ip = peer.rfind("ipv4:", 0) == 0 || peer.rfind("ipv6:", 0) == 0;
  const auto colon = peer.rfind(':');
  // The port follows the last colon; for ipv6 the address itself is bracketed.
  if (!ip || colon <= 5 || peer.back() == ']') return peer;
  return peer.substr(0, colon);
}

}  // namespace qlorad::server
