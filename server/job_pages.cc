#include "server/job_pages.h"

#include <algorithm>
#include <charconv>
#include <string_view>

namespace qlorad::server {
namespace {

constexpr std::string_view kTokenPrefix = "v1:";

Status BadToken(const std::string& token) {
  return InvalidArgument("page_token: '" + token +
                         "' is not a token this coordinator gave out (pass next_page_token back "
                         "as it came, or leave it empty for the first page)");
}

}  // namespace

StatusOr<int> ResolvePageSize(int page_size) {
  if (page_size < 0) {
    return InvalidArgument("page_size: must be >= 0, got " + std::to_string(page_size));
  }
  if (page_size == 0) return kDefaultJobPageSize;
  return std::min(page_size, kMaxJobPageSize);
}

std::string EncodePageToken(const JobCursor& cursor) {
  return std::string(kTokenPrefix) + std::to_string(cursor.created_unix_ms) + ":" + cursor.id;
}

StatusOr<std::optional<JobCursor>> DecodePageToken(const std::string& token) {
  if (token.empty()) return std::optional<JobCursor>();
  // v1:<created_unix_ms>:<job id>
  const std::string_view view(token);
  if (view.substr(0, kTokenPrefix.size()) != kTokenPrefix) return BadToken(token);
  const std::string_view rest = view.substr(kTokenPrefix.size());
  const size_t colon = rest.find(':');
  if (colon == std::string_view::npos || colon + 1 == rest.size()) return BadToken(token);
  JobCursor cursor;
  const char* end = rest.data() + colon;
  auto [ptr, ec] = std::from_chars(rest.data(), end, cursor.created_unix_ms);
  if (ec != std::errc() || ptr != end || cursor.created_unix_ms < 0) return BadToken(token);
  cursor.id = std::string(rest.substr(colon + 1));
  return std::optional<JobCursor>(std::move(cursor));
}

}  // namespace qlorad::server
