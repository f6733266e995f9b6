// JobService over gRPC (sync API): thin handlers over Coordinator. Each streaming call owns a
// FollowStream object holding its cursor and hub subscription, and a StreamLimiter slot.
#pragma once

#include "qlorad/v1/jobs.grpc.pb.h"
#include "server/coordinator.h"
#include "server/stream_limiter.h"

namespace qlorad::server {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(Coordinator& coordinator, StreamLimits stream_limits)
      : coordinator_(coordinator), streams_(stream_limits) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status StreamMetrics(grpc::ServerContext* context, const v1::StreamMetricsRequest* request,
                             grpc::ServerWriter<v1::StepMetrics>* writer) override;
  grpc::Status StreamLogs(grpc::ServerContext* context, const v1::StreamLogsRequest* request,
                          grpc::ServerWriter<v1::LogLine>* writer) override;

 private:
  Coordinator& coordinator_;
  StreamLimiter streams_;
};

}  // namespace qlorad::server
