#include "common/process/free_port.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace qlorad::process {
namespace {

// Binds `fd` to port 0 on every IPv4 address and returns the port the kernel chose, or -1.
int BindEphemeral(int fd) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return -1;
  }
  return static_cast<int>(ntohs(addr.sin_port));
}

}  // namespace

StatusOr<int> FreeTcpPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Unavailable(std::string("no free TCP port: socket: ") + std::strerror(errno));
  const int port = BindEphemeral(fd);
  const int err = errno;
  ::close(fd);
  if (port < 0) return Unavailable(std::string("no free TCP port: bind: ") + std::strerror(err));
  return port;
}

StatusOr<PortReservation> PortReservation::Reserve() {
  // CLOEXEC: the trainers this process starts must not hold the reservation past its life.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return Unavailable(std::string("cannot reserve a port: socket: ") + std::strerror(errno));
  const int on = 1;
  const int port =
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == 0 ? BindEphemeral(fd) : -1;
  if (port < 0) {
    const int err = errno;
    ::close(fd);
    return Unavailable(std::string("cannot reserve a port: bind: ") + std::strerror(err));
  }
  return PortReservation(fd, port);
}

PortReservation::PortReservation(PortReservation&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), port_(std::exchange(other.port_, 0)) {}

PortReservation& PortReservation::operator=(PortReservation&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    port_ = std::exchange(other.port_, 0);
  }
  return *this;
}

PortReservation::~PortReservation() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace qlorad::process
