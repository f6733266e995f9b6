// Where another host is and which local address reaches it: what a rank needs to meet the others
// when they are on several machines (the c10d store at rank 0's host, Gloo's listening address).
#pragma once

#include <chrono>
#include <string>

#include "common/status.h"

namespace qlorad::process {

// The first numeric address `host` (a name or an address) resolves to, asking again until it
// does or `within` has passed: a name may be published late (a cluster DNS that registers a
// machine once it runs). The lookup runs on a thread of its own, so a resolver that hangs
// (an unreachable DNS server) cannot hold the caller past `within`. Unavailable, with the
// resolver's last answer, when there is none in time.
StatusOr<std::string> ResolveHost(const std::string& host, std::chrono::milliseconds within);

// The local address the kernel's routing picks to reach `address` (numeric, IPv4 or IPv6): a
// UDP socket connected there (which sends nothing) and its own name read back. "127.0.0.1" for
// loopback, this host's address on the right interface for another machine.
StatusOr<std::string> LocalAddressTowards(const std::string& address);

}  // namespace qlorad::process
