#include "server/worker_service.h"

#include <chrono>

#include "server/status_mapping.h"

namespace qlorad::server {
namespace {

// How long one wait for an order lasts before checking whether the client is still there.
constexpr std::chrono::milliseconds kOrderPoll{200};

}  // namespace

grpc::Status WorkerServiceImpl::Register(grpc::ServerContext*, const v1::RegisterRequest* request,
                                         v1::RegisterResponse* response) {
  auto registered = coordinator_.RegisterWorker(*request);
  if (!registered.ok()) return ToGrpcStatus(registered.status());
  *response = std::move(registered).value();
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  response->set_known(coordinator_.Heartbeat(*request));
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Assignments(grpc::ServerContext* context,
                                            const v1::AssignmentsRequest* request,
                                            grpc::ServerWriter<v1::Assignment>* writer) {
  const std::string& worker_id = request->worker_id();
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

grpc::Status WorkerServiceImpl::ReportEvents(grpc::ServerContext*,
                                             const v1::ReportEventsRequest* request,
                                             v1::ReportEventsResponse*) {
  return ToGrpcStatus(coordinator_.ReportEvents(*request));
}

}  // namespace qlorad::server
