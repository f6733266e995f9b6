#include "common/memory_refusal.h"

#include <cstdlib>
#include <string>

namespace qlorad {

std::optional<int64_t> PeakOfRefusal(std::string_view message) {
  const size_t at = message.find(kRefusalStart);
  if (at == std::string_view::npos) return std::nullopt;
  // "23.4 GiB at its peak" or "310 MiB at its peak", as FormatMemory writes them.
  const std::string rest(message.substr(at + kRefusalStart.size(), 32));
  char* end = nullptr;
  const double value = std::strtod(rest.c_str(), &end);
  if (end == rest.c_str() || value < 0) return std::nullopt;
  const std::string_view unit(end, static_cast<size_t>(rest.c_str() + rest.size() - end));
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  constexpr double kMiB = 1024.0 * 1024.0;
  if (unit.rfind(" GiB at its peak", 0) == 0) return static_cast<int64_t>((value + 0.05) * kGiB);
  if (unit.rfind(" MiB at its peak", 0) == 0) return static_cast<int64_t>((value + 0.5) * kMiB);
  return std::nullopt;
}

}  // namespace qlorad
