#include "common/process/host_address.h"

#include <gtest/gtest.h>

namespace qlorad::process {
namespace {

using std::chrono::milliseconds;

TEST(ResolveHostTest, AddressesAndNamesResolveToNumericAddresses) {
  StatusOr<std::string> numeric = ResolveHost("127.0.0.1", milliseconds(5000));
  ASSERT_TRUE(numeric.ok()) << numeric.status().ToString();
  EXPECT_EQ(*numeric, "127.0.0.1");
  StatusOr<std::string> name = ResolveHost("localhost", milliseconds(5000));
  ASSERT_TRUE(name.ok()) << name.status().ToString();
  EXPECT_TRUE(*name == "127.0.0.1" || *name == "::1") << *name;
}

TEST(ResolveHostTest, AnUnresolvableNameFailsWhenTheTimeIsUpWithTheResolversAnswer) {
  // .invalid never resolves (RFC 2606); c10d's own connect would keep asking for its whole
  // store timeout instead.
  const auto asked = std::chrono::steady_clock::now();
  StatusOr<std::string> none = ResolveHost("no-such-host.invalid", milliseconds(300));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(none.status().message().empty());
  EXPECT_GE(std::chrono::steady_clock::now() - asked, milliseconds(300));  // it asked again
}

TEST(LocalAddressTowardsTest, LoopbackIsReachedFromLoopback) {
  StatusOr<std::string> local = LocalAddressTowards("127.0.0.1");
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  EXPECT_EQ(*local, "127.0.0.1");
}

TEST(LocalAddressTowardsTest, ANameIsRefusedNamingIt) {
  StatusOr<std::string> local = LocalAddressTowards("localhost");
  ASSERT_FALSE(local.ok());
  EXPECT_NE(local.status().message().find("'localhost' is not a numeric address"),
            std::string::npos)
      << local.status().message();
}

}  // namespace
}  // namespace qlorad::process
