#include "client/cli/job_pages.h"

#include <algorithm>

namespace qlorad::cli {

grpc::Status WalkJobPages(qlorad::v1::ListJobsRequest request, int limit, const FetchJobPage& fetch,
                          const std::function<void(const qlorad::v1::Job&)>& each) {
  int listed = 0;
  request.clear_page_token();
  while (true) {
    // Ask for no more than is still wanted; 0 leaves the size to the coordinator.
    request.set_page_size(limit > 0 ? limit - listed : 0);
    qlorad::v1::ListJobsResponse page;
    if (grpc::Status status = fetch(request, &page); !status.ok()) return status;
    for (const auto& job : page.jobs()) {
      if (limit > 0 && listed == limit) break;
      each(job);
      ++listed;
    }
    if (page.next_page_token().empty() || (limit > 0 && listed >= limit)) return grpc::Status::OK;
    // A token that repeats would walk forever: a coordinator bug, reported rather than looped on.
    if (page.next_page_token() == request.page_token() || page.jobs_size() == 0) {
      return {grpc::StatusCode::INTERNAL,
              "ListJobs: the coordinator returned a next_page_token that does not move on"};
    }
    request.set_page_token(page.next_page_token());
  }
}

}  // namespace qlorad::cli
