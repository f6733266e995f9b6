#include "server/ids.h"

#include <fmt/format.h>

#include <cstdint>
#include <random>

namespace qlorad::server {

std::string RandomId(const std::string& prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:08x}", prefix, static_cast<uint32_t>(rng()));
}

}  // namespace qlorad::server
