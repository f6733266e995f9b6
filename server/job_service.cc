#include "server/job_service.h"

#include "server/auth_grpc.h"
#include "server/status_mapping.h"
#include "server/stream_follow.h"

namespace qlorad::server {
namespace {

// Rows per store read while replaying; bounds memory per stream, not what is sent.
constexpr int kReplayPage = 512;

grpc::Status Reply(StatusOr<v1::Job> job, v1::Job* response) {
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = std::move(job).value();
  return grpc::Status::OK;
}

}  // namespace

StatusOr<Principal> JobServiceImpl::Caller(grpc::ServerContext* context) {
  QLORAD_ASSIGN_OR_RETURN(Principal caller, CallerOf(*context, auth_));
  QLORAD_RETURN_IF_ERROR(RequireRole(caller, {Role::kUser, Role::kAdmin}, "the JobService"));
  return caller;
}

StatusOr<v1::Job> JobServiceImpl::VisibleJob(grpc::ServerContext* context,
                                             const std::string& job_id) {
  QLORAD_ASSIGN_OR_RETURN(Principal caller, Caller(context));
  QLORAD_ASSIGN_OR_RETURN(v1::Job job, coordinator_.GetJob(job_id));
  QLORAD_RETURN_IF_ERROR(CheckJobAccess(caller, job));
  return job;
}

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* context,
                                       const v1::SubmitJobRequest* request, v1::Job* response) {
  auto caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  return Reply(coordinator_.SubmitJob(request->spec_yaml(), caller->name), response);
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                    v1::Job* response) {
  return Reply(VisibleJob(context, request->job_id()), response);
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* context,
                                      const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  auto caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  std::vector<v1::JobState> states;
  for (int s : request->states()) states.push_back(static_cast<v1::JobState>(s));
  auto page = coordinator_.ListJobs(states, request->page_size(), request->page_token(),
                                    VisibleOwner(*caller));
  if (!page.ok()) return ToGrpcStatus(page.status());
  for (auto& job : page->jobs) *response->add_jobs() = std::move(job);
  response->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* context,
                                       const v1::CancelJobRequest* request, v1::Job* response) {
  if (auto job = VisibleJob(context, request->job_id()); !job.ok()) {
    return ToGrpcStatus(job.status());
  }
  return Reply(coordinator_.CancelJob(request->job_id()), response);
}

grpc::Status JobServiceImpl::StreamMetrics(grpc::ServerContext* context,
                                           const v1::StreamMetricsRequest* request,
                                           grpc::ServerWriter<v1::StepMetrics>* writer) {
  if (auto job = VisibleJob(context, request->job_id()); !job.ok()) {
    return ToGrpcStatus(job.status());
  }
  std::string refusal;
  const auto slot = streams_.TryAcquire(ClientOfPeer(context->peer()), &refusal);
  if (!slot) return {grpc::StatusCode::RESOURCE_EXHAUSTED, refusal};
  const std::string job_id = request->job_id();
  const int64_t from_step = request->from_step();
  Store& store = coordinator_.store();
  FollowStream<v1::StepMetrics> stream(
      coordinator_, coordinator_.metrics_hub(), job_id, /*start_cursor=*/0,
      [&](int64_t after) { return store.ReadMetrics(job_id, from_step, after, kReplayPage); },
      [&](const v1::StepMetrics& m) { return m.step() >= from_step; });
  return request->stored_only() ? stream.Replay(writer) : stream.Run(context, writer);
}

grpc::Status JobServiceImpl::StreamLogs(grpc::ServerContext* context,
                                        const v1::StreamLogsRequest* request,
                                        grpc::ServerWriter<v1::LogLine>* writer) {
  if (auto job = VisibleJob(context, request->job_id()); !job.ok()) {
    return ToGrpcStatus(job.status());
  }
  std::string refusal;
  const auto slot = streams_.TryAcquire(ClientOfPeer(context->peer()), &refusal);
  if (!slot) return {grpc::StatusCode::RESOURCE_EXHAUSTED, refusal};
  const std::string job_id = request->job_id();
  Store& store = coordinator_.store();
  // Log cursors are seqs: starting after from_seq - 1 sends from_seq itself.
  FollowStream<v1::LogLine> stream(
      coordinator_, coordinator_.log_hub(), job_id, std::max<int64_t>(request->from_seq() - 1, 0),
      [&](int64_t after) { return store.ReadLogs(job_id, after, kReplayPage); },
      [](const v1::LogLine&) { return true; });
  return stream.Run(context, writer);
}

}  // namespace qlorad::server
