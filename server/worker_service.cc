#include "server/worker_service.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "server/auth_grpc.h"
#include "server/status_mapping.h"

namespace qlorad::server {
namespace {

// How long one wait for an order lasts before checking whether the client is still there.
constexpr std::chrono::milliseconds kOrderPoll{200};

}  // namespace

StatusOr<Principal> WorkerServiceImpl::Worker(grpc::ServerContext* context) {
  QLORAD_ASSIGN_OR_RETURN(Principal caller, CallerOf(*context, auth_));
  QLORAD_RETURN_IF_ERROR(RequireRole(caller, {Role::kWorker}, "the WorkerService"));
  return caller;
}

Status WorkerServiceImpl::CheckActsAs(grpc::ServerContext* context, const std::string& worker_id) {
  QLORAD_ASSIGN_OR_RETURN(Principal caller, Worker(context));
  if (caller.local()) return Status::Ok();
  const auto name = coordinator_.WorkerName(worker_id);
  if (!name || *name == caller.name) return Status::Ok();
  return PermissionDenied("worker_id: " + worker_id + " is worker '" + *name + "', not " +
                          caller.Describe());
}

grpc::Status WorkerServiceImpl::Enroll(grpc::ServerContext* context,
                                       const v1::EnrollRequest* request,
                                       v1::EnrollResponse* response) {
  auto caller = CallerOf(*context, auth_);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (Status allowed = RequireRole(*caller, {Role::kEnroll}, "WorkerService.Enroll");
      !allowed.ok()) {
    return ToGrpcStatus(allowed);
  }
  auto issued = IssueToken(coordinator_.store(), Role::kWorker, request->name(),
                           /*unique_name=*/true);
  if (!issued.ok()) return ToGrpcStatus(issued.status());
  spdlog::info("worker '{}' enrolled by {}: credential {}", request->name(), caller->Describe(),
               issued->record.id);
  response->set_credential(issued->secret);
  response->set_token_id(issued->record.id);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Register(grpc::ServerContext* context,
                                         const v1::RegisterRequest* request,
                                         v1::RegisterResponse* response) {
  auto caller = Worker(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (!caller->local() && request->name() != caller->name) {
    return ToGrpcStatus(PermissionDenied("name: '" + request->name() + "' is not the name " +
                                         caller->Describe() + " was enrolled as"));
  }
  auto registered = coordinator_.RegisterWorker(*request);
  if (!registered.ok()) return ToGrpcStatus(registered.status());
  *response = std::move(registered).value();
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* context,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  if (Status allowed = CheckActsAs(context, request->worker_id()); !allowed.ok()) {
    return ToGrpcStatus(allowed);
  }
  response->set_known(coordinator_.Heartbeat(*request));
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Assignments(grpc::ServerContext* context,
                                            const v1::AssignmentsRequest* request,
                                            grpc::ServerWriter<v1::Assignment>* writer) {
  const std::string& worker_id = request->worker_id();
  if (Status allowed = CheckActsAs(context, worker_id); !allowed.ok()) return ToGrpcStatus(allowed);
  auto generation = coordinator_.AttachOrders(worker_id);
  if (!generation.ok()) return ToGrpcStatus(generation.status());
  grpc::Status result = grpc::Status::OK;
  while (!context->IsCancelled()) {
    auto order = coordinator_.PeekOrder(worker_id, *generation, kOrderPoll);
    if (!order.ok()) {
      result = ToGrpcStatus(order.status());
      break;
    }
    if (!order->has_value()) continue;
    if (!writer->Write(**order)) break;  // kept in the outbox for the next stream
    coordinator_.PopOrder(worker_id, *generation);
  }
  coordinator_.DetachOrders(worker_id, *generation);
  return result;
}

grpc::Status WorkerServiceImpl::ReportEvents(grpc::ServerContext* context,
                                             const v1::ReportEventsRequest* request,
                                             v1::ReportEventsResponse*) {
  if (Status allowed = CheckActsAs(context, request->worker_id()); !allowed.ok()) {
    return ToGrpcStatus(allowed);
  }
  return ToGrpcStatus(coordinator_.ReportEvents(*request));
}

}  // namespace qlorad::server
