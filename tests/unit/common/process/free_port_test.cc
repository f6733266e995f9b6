#include "common/process/free_port.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>

namespace qlorad::process {
namespace {

// Whether a listener (like rank 0's TCPStore) can take `port` on `address` now.
bool CanListenOn(in_addr_t address, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(address);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  ::listen(fd, 1) == 0;
  if (fd >= 0) ::close(fd);
  return ok;
}

TEST(FreeTcpPortTest, ReturnsAPortThatCanBeBoundOnEveryAddressAndOnLoopback) {
  const StatusOr<int> port = FreeTcpPort();
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  EXPECT_GT(*port, 0);
  EXPECT_LT(*port, 65536);
  // Released, not held: the store can listen there.
  EXPECT_TRUE(CanListenOn(INADDR_ANY, *port));
  EXPECT_TRUE(CanListenOn(INADDR_LOOPBACK, *port));
}

// Whether a plain bind, without SO_REUSEADDR (another program's fixed port), can take `port`.
bool CanBindPlainly(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  if (fd >= 0) ::close(fd);
  return ok;
}

// What c10d's TCPStore does with the port (libuv and its own socket code alike): SO_REUSEADDR,
// bind, listen.
bool StoreCanListenOn(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  const int on = 1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = fd >= 0 && ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == 0 &&
                  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  ::listen(fd, 1) == 0;
  if (fd >= 0) ::close(fd);
  return ok;
}

TEST(PortReservationTest, KeepsOthersOffThePortButLetsTheStoreListenThereAgainAndAgain) {
  StatusOr<PortReservation> reserved = PortReservation::Reserve();
  ASSERT_TRUE(reserved.ok()) << reserved.status().ToString();
  const int port = reserved->port();
  EXPECT_GT(port, 0);
  EXPECT_FALSE(CanBindPlainly(port));
  // One job's store after another's: the reservation outlives each.
  EXPECT_TRUE(StoreCanListenOn(port));
  EXPECT_TRUE(StoreCanListenOn(port));
  EXPECT_FALSE(CanBindPlainly(port));

  PortReservation moved = std::move(reserved).value();
  EXPECT_EQ(moved.port(), port);
  EXPECT_FALSE(CanBindPlainly(port));
  { PortReservation gone = std::move(moved); }
  EXPECT_TRUE(CanBindPlainly(port));  // released with the object
}

}  // namespace
}  // namespace qlorad::process
