// WorkerService over gRPC (sync API): thin handlers over Coordinator. The Assignments stream
// polls the worker's outbox and removes an order only once it was written, so delivery is at
// least once: when a stream breaks just as an order goes out, the next stream repeats it, and
// the agent ignores a START for a (job, attempt) it already runs.
//
// Identity (auth.h): Enroll takes an enrollment token and gives a worker credential for one
// name; every other call takes that credential, Register only for its own name, and the calls
// naming a worker_id only for a worker registered under that name. What a worker may report
// about a job is then fenced by the coordinator: only the rank of the current attempt it holds.
#pragma once

#include "qlorad/v1/workers.grpc.pb.h"
#include "server/auth.h"
#include "server/coordinator.h"

namespace qlorad::server {

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(Coordinator& coordinator, const Authenticator& auth)
      : coordinator_(coordinator), auth_(auth) {}

  grpc::Status Enroll(grpc::ServerContext* context, const v1::EnrollRequest* request,
                      v1::EnrollResponse* response) override;
  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status Assignments(grpc::ServerContext* context, const v1::AssignmentsRequest* request,
                           grpc::ServerWriter<v1::Assignment>* writer) override;
  grpc::Status ReportEvents(grpc::ServerContext* context, const v1::ReportEventsRequest* request,
                            v1::ReportEventsResponse* response) override;

 private:
  // The calling worker, if its credential is a worker's (or it is the local caller).
  StatusOr<Principal> Worker(grpc::ServerContext* context);
  // OK when the caller may act as worker_id: registered under the caller's name. An unknown id
  // passes, so the call itself says NOT_FOUND (the worker registers again).
  Status CheckActsAs(grpc::ServerContext* context, const std::string& worker_id);

  Coordinator& coordinator_;
  const Authenticator& auth_;
};

}  // namespace qlorad::server
