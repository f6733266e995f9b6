// JobService over gRPC (sync API): thin handlers over Coordinator. Each streaming call owns a
// FollowStream object holding its cursor and hub subscription, and a StreamLimiter slot. Every
// call is authenticated first (auth.h): users see and touch their own jobs, admins all.
#pragma once

#include "qlorad/v1/jobs.grpc.pb.h"
#include "server/auth.h"
#include "server/coordinator.h"
#include "server/stream_limiter.h"

namespace qlorad::server {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(Coordinator& coordinator, const Authenticator& auth, StreamLimits stream_limits)
      : coordinator_(coordinator), auth_(auth), streams_(stream_limits) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status RetryJob(grpc::ServerContext* context, const v1::RetryJobRequest* request,
                        v1::Job* response) override;
  grpc::Status ListWorkers(grpc::ServerContext* context, const v1::ListWorkersRequest* request,
                           v1::ListWorkersResponse* response) override;
  grpc::Status StreamMetrics(grpc::ServerContext* context, const v1::StreamMetricsRequest* request,
                             grpc::ServerWriter<v1::StepMetrics>* writer) override;
  grpc::Status StreamLogs(grpc::ServerContext* context, const v1::StreamLogsRequest* request,
                          grpc::ServerWriter<v1::LogLine>* writer) override;

 private:
  // The caller, if its role may use the JobService (users and admins).
  StatusOr<Principal> Caller(grpc::ServerContext* context);
  // The job, if the caller may see it.
  StatusOr<v1::Job> VisibleJob(grpc::ServerContext* context, const std::string& job_id);

  Coordinator& coordinator_;
  const Authenticator& auth_;
  StreamLimiter streams_;
};

}  // namespace qlorad::server
