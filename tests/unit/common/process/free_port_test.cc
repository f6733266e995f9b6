#include "common/process/free_port.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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

}  // namespace
}  // namespace qlorad::process
