// ListJobs' paging: the page size a request gets and the token that says where the previous page
// ended. Pages are cut at a (created time, id) position instead of an offset, so jobs submitted
// between two calls do not shift the next page: a walk lists each older job exactly once.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/store.h"

namespace qlorad::server {

// Listed jobs carry no spec, so even the largest page is a few hundred KiB.
inline constexpr int kDefaultJobPageSize = 100;
inline constexpr int kMaxJobPageSize = 1000;

// One page of a listing: jobs without their specs, and the token of the next page ("" when this
// was the last).
struct JobPage {
  std::vector<v1::Job> jobs;
  std::string next_page_token;
};

// 0 -> the default, above the maximum -> the maximum; negative: INVALID_ARGUMENT naming page_size.
StatusOr<int> ResolvePageSize(int page_size);

// The token after the last job of a page. Opaque to clients; versioned so that its form can
// change without misreading old tokens.
std::string EncodePageToken(const JobCursor& cursor);
// "" -> nullopt (the first page); anything this coordinator did not give out: INVALID_ARGUMENT
// naming page_token.
StatusOr<std::optional<JobCursor>> DecodePageToken(const std::string& token);

}  // namespace qlorad::server
