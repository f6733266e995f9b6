// `jobs` walks ListJobs a page at a time: the coordinator caps a page (and leaves specs out), so
// a listing of any length is several calls, each as cheap as the first.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>

#include "qlorad/v1/jobs.pb.h"

namespace qlorad::cli {

using FetchJobPage = std::function<grpc::Status(const qlorad::v1::ListJobsRequest& request,
                                                qlorad::v1::ListJobsResponse* response)>;

// Calls `fetch` with `request` (its states kept), then with each next_page_token, and passes
// every job to `each`, newest first, until the last page or `limit` jobs (0: no limit). The
// first failed call ends the walk with its status; so does a token that does not move on.
grpc::Status WalkJobPages(qlorad::v1::ListJobsRequest request, int limit, const FetchJobPage& fetch,
                          const std::function<void(const qlorad::v1::Job&)>& each);

}  // namespace qlorad::cli
