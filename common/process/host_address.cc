#include "common/process/host_address.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

namespace qlorad::process {
namespace {

std::string NumericHost(const sockaddr* addr, socklen_t len) {
  char text[NI_MAXHOST] = {};
  if (::getnameinfo(addr, len, text, sizeof(text), nullptr, 0, NI_NUMERICHOST) != 0) return "";
  return text;
}

// One getaddrinfo: the first address, or the resolver's message.
StatusOr<std::string> LookUpOnce(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0) return Unavailable(::gai_strerror(rc));
  std::string address = NumericHost(found->ai_addr, found->ai_addrlen);
  ::freeaddrinfo(found);
  if (address.empty()) return Unavailable("no numeric address in the answer");
  return address;
}

}  // namespace

StatusOr<std::string> ResolveHost(const std::string& host, std::chrono::milliseconds within) {
  // Shared with the lookup thread, which may outlive this call when the resolver hangs.
  struct Lookup {
    std::mutex mu;
    std::condition_variable cv;
    bool stop = false;
    bool done = false;
    Status last = Unavailable("no answer from the resolver");
    std::string address;
  };
  auto lookup = std::make_shared<Lookup>();
  const auto deadline = std::chrono::steady_clock::now() + within;
  std::thread([lookup, host] {
    auto pause = std::chrono::milliseconds(100);
    while (true) {
      StatusOr<std::string> answer = LookUpOnce(host);
      std::unique_lock<std::mutex> lock(lookup->mu);
      if (answer.ok()) {
        lookup->address = *answer;
        lookup->done = true;
        lookup->cv.notify_all();
        return;
      }
      lookup->last = answer.status();
      if (lookup->cv.wait_for(lock, pause, [&] { return lookup->stop; })) return;
      pause = std::min(pause * 2, std::chrono::milliseconds(1000));
    }
  }).detach();
  std::unique_lock<std::mutex> lock(lookup->mu);
  lookup->cv.wait_until(lock, deadline, [&] { return lookup->done; });
  if (lookup->done) return lookup->address;
  lookup->stop = true;
  lookup->cv.notify_all();
  return lookup->last;
}

StatusOr<std::string> LocalAddressTowards(const std::string& address) {
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  // Any port will do: connect() on a UDP socket only picks the route.
  const int rc = ::getaddrinfo(address.c_str(), "9", &hints, &found);
  if (rc != 0) return InvalidArgument("'" + address + "' is not a numeric address");
  const int fd = ::socket(found->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  const bool routed = fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0 &&
                      ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0;
  const int err = errno;
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(found);
  if (!routed) return Unavailable("no route to " + address + ": " + std::strerror(err));
  return NumericHost(reinterpret_cast<sockaddr*>(&local), len);
}

}  // namespace qlorad::process
