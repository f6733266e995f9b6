#include "client/cli/units.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <array>
#include <cmath>
#include <ctime>

namespace qlorad::cli {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const auto total = static_cast<int64_t>(std::llround(seconds));
  const int64_t h = total / 3600;
  const int64_t m = (total % 3600) / 60;
  const int64_t s = total % 60;
  if (h > 0) return fmt::format("{}:{:02}:{:02}", h, m, s);
  return fmt::format("{}:{:02}", m, s);
}

std::string FormatRate(double per_second) {
  if (!std::isfinite(per_second) || per_second < 0) return "?";
  if (per_second < 1000) return fmt::format("{:.0f}", per_second);
  constexpr std::array<const char*, 3> kSuffixes = {"k", "M", "G"};
  double v = per_second / 1000;
  size_t i = 0;
  // Round first so that 999.96k is shown as 1.0M rather than "1000.0k".
  while (std::round(v * 10) / 10 >= 1000 && i + 1 < kSuffixes.size()) {
    v /= 1000;
    ++i;
  }
  return fmt::format("{:.1f}{}", v, kSuffixes[i]);
}

std::string FormatAge(int64_t then_unix_ms, int64_t now_unix_ms) {
  // Clocks of client and server may disagree a little; a job from "the future" is just new.
  const int64_t s = std::max<int64_t>(0, (now_unix_ms - then_unix_ms) / 1000);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m", s / 60);
  if (s < 86400) return fmt::format("{}h", s / 3600);
  return fmt::format("{}d", s / 86400);
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  constexpr std::array<const char*, 4> kUnits = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  size_t i = 0;
  while (std::round(v * 10) / 10 >= 1024 && i + 1 < kUnits.size()) {
    v /= 1024;
    ++i;
  }
  return fmt::format("{:.1f} {}", v, kUnits[i]);
}

std::string FormatTimestamp(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  return fmt::format("{:%Y-%m-%d %H:%M:%S} UTC", fmt::gmtime(t));
}

std::string FormatTimestampMillis(int64_t unix_ms) {
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  return fmt::format("{:%Y-%m-%d %H:%M:%S}.{:03}", fmt::gmtime(t), unix_ms % 1000);
}

}  // namespace qlorad::cli
