// Caps the metric and log streams open at once, per client and in total. Each open stream holds
// a thread of the synchronous gRPC server and a hub subscription, so without a cap one client
// can run the coordinator out of threads (seen: 1000 streams, 751 threads). Past a cap the
// stream is refused at once (RESOURCE_EXHAUSTED) rather than queued.
//
// A client is its peer address without the port: there is no authentication yet, so every
// connection from one host counts as the same client.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace qlorad::server {

struct StreamLimits {
  // A thousand followers of one job is a target of the metric fan-out (issue 19).
  int max_total = 1024;
  int max_per_client = 256;
};

class StreamLimiter {
 public:
  // One open stream; gives its place back when destroyed.
  class Slot {
   public:
    Slot(Slot&& other) noexcept;
    Slot& operator=(Slot&&) = delete;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot();

   private:
    friend class StreamLimiter;
    Slot(StreamLimiter* limiter, std::string client)
        : limiter_(limiter), client_(std::move(client)) {}
    StreamLimiter* limiter_;
    std::string client_;
  };

  explicit StreamLimiter(StreamLimits limits) : limits_(limits) {}

  // A place for one more stream of `client`; nullopt, with `*refusal` naming the limit and the
  // flag that sets it, when either limit is reached.
  std::optional<Slot> TryAcquire(const std::string& client, std::string* refusal);

  int open_total() const;
  int open_for(const std::string& client) const;

 private:
  void Release(const std::string& client);

  const StreamLimits limits_;
  mutable std::mutex mu_;
  int total_ = 0;
  std::map<std::string, int> per_client_;  // only clients with a stream open
};

// gRPC's peer string without the port: "ipv4:127.0.0.1:5555" -> "ipv4:127.0.0.1",
// "ipv6:[::1]:5555" -> "ipv6:[::1]"; anything else (a unix socket) as it is.
std::string ClientOfPeer(const std::string& peer);

}  // namespace qlorad::server
