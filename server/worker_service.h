// WorkerService over gRPC (sync API): thin handlers over Coordinator. The Assignments stream
// polls the worker's outbox and removes an order only once it was written, so delivery is at
// least once: when a stream breaks just as an order goes out, the next stream repeats it, and
// the agent ignores a START for a (job, attempt) it already runs.
#pragma once

#include "qlorad/v1/workers.grpc.pb.h"
#include "server/coordinator.h"

namespace qlorad::server {

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  explicit WorkerServiceImpl(Coordinator& coordinator) : coordinator_(coordinator) {}

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status Assignments(grpc::ServerContext* context, const v1::AssignmentsRequest* request,
                           grpc::ServerWriter<v1::Assignment>* writer) override;
  grpc::Status ReportEvents(grpc::ServerContext* context, const v1::ReportEventsRequest* request,
                            v1::ReportEventsResponse* response) override;

 private:
  Coordinator& coordinator_;
};

}  // namespace qlorad::server
