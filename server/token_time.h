// Token expiry as operators type and read it (`qlorad token create --expires-in 30d` or
// `--expires-at 2027-01-31T00:00:00Z`, `qlorad token list`): UTC times in RFC 3339's
// "YYYY-MM-DDTHH:MM:SSZ" form, and durations of a number and a unit.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace qlorad::server {

// "2027-01-31T00:00:00Z" (whole seconds; the milliseconds are dropped).
std::string FormatTokenTime(int64_t unix_ms);

// The inverse of FormatTokenTime; INVALID_ARGUMENT naming `flag` for anything else (a missing
// "Z", an offset, a date that does not exist).
StatusOr<int64_t> ParseTokenTime(const std::string& text, const std::string& flag);

// Longest lifetime --expires-in takes; longer is almost certainly a typo (and milliseconds past
// it would near int64's end).
inline constexpr int64_t kMaxTokenLifetimeS = int64_t{100} * 366 * 24 * 3600;

// CLI11 converts "30d", "12h", "90m", "45s" or "2w" to seconds (CLI::AsNumberWithUnit), then this
// refuses zero, negative and over-long lifetimes; CLI11's errors start with the flag's name.
CLI::Validator DurationSeconds();
CLI::Validator PositiveLifetime();

}  // namespace qlorad::server
