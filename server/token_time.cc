#include "server/token_time.h"

#include <ctime>
#include <map>

namespace qlorad::server {

std::string FormatTokenTime(int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

StatusOr<int64_t> ParseTokenTime(const std::string& text, const std::string& flag) {
  std::tm utc{};
  const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%SZ", &utc);
  const std::time_t seconds = end && *end == '\0' ? timegm(&utc) : std::time_t(-1);
  // strptime takes 2027-02-30 and timegm rolls it into March: a time that does not format
  // back to what was typed was not a real one.
  if (seconds == -1 || FormatTokenTime(int64_t{seconds} * 1000) != text) {
    return InvalidArgument(flag + ": '" + text + "' is not a UTC time like 2027-01-31T00:00:00Z");
  }
  return int64_t{seconds} * 1000;
}

CLI::Validator DurationSeconds() {
  const std::map<std::string, int64_t> units = {
      {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 24 * 3600}, {"w", 7 * 24 * 3600}};
  return CLI::AsNumberWithUnit(
      units,
      static_cast<CLI::AsNumberWithUnit::Options>(CLI::AsNumberWithUnit::UNIT_REQUIRED |
                                                  CLI::AsNumberWithUnit::CASE_SENSITIVE),
      "DURATION");
}

CLI::Validator PositiveLifetime() {
  return CLI::Validator(
      [](std::string& seconds) -> std::string {
        const int64_t s = std::stoll(seconds);  // DurationSeconds made it a number
        if (s >= 1 && s <= kMaxTokenLifetimeS) return "";
        return "a lifetime must be from 1s to 100 years (like 30d, 12h, 90m)";
      },
      "");
}

}  // namespace qlorad::server
