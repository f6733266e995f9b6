// Human-readable numbers for qloractl's output: durations, rates, ages and byte counts.
// Pure functions, so the exact strings are unit-tested.
#pragma once

#include <cstdint>
#include <string>

namespace qlorad::cli {

// "0:35", "12:05", "1:02:03": minutes and seconds, with hours once there are any.
// Negative or non-finite input (an unknown estimate) gives "--:--".
std::string FormatDuration(double seconds);

// 950 -> "950", 1234 -> "1.2k", 12345 -> "12.3k", 1.5e6 -> "1.5M"; used for tokens/s.
std::string FormatRate(double per_second);

// How long ago something happened, in its largest whole unit: "5s", "3m", "2h", "4d".
std::string FormatAge(int64_t then_unix_ms, int64_t now_unix_ms);

// 1.5 GiB style, binary units: "512 B", "3.0 KiB", "1.5 GiB".
std::string FormatBytes(int64_t bytes);

// "2026-11-25 16:30:00 UTC", or "-" for 0 (not happened yet).
std::string FormatTimestamp(int64_t unix_ms);
// "2026-11-25 16:30:01.123" (UTC), for log lines.
std::string FormatTimestampMillis(int64_t unix_ms);

}  // namespace qlorad::cli
