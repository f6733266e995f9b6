// A fake coordinator for the agent's tests: a real grpc::Server on a loopback port implementing
// WorkerService, which hands out the orders a test gives it and records registrations,
// heartbeats and events.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "qlorad/v1/workers.grpc.pb.h"

namespace qlorad::agent::testing {

using namespace std::chrono_literals;

class FakeCoordinator final : public v1::WorkerService::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu_);
    registrations_.push_back(*req);
    resp->set_worker_id("w" + std::to_string(registrations_.size()));
    resp->set_heartbeat_interval_ms(100);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu_);
    heartbeats_.push_back(*req);
    resp->set_known(!forget_workers_);
    return grpc::Status::OK;
  }
  grpc::Status Assignments(grpc::ServerContext* ctx, const v1::AssignmentsRequest* req,
                           grpc::ServerWriter<v1::Assignment>* writer) override {
    std::unique_lock<std::mutex> lock(mu_);
    streams_for_.push_back(req->worker_id());
    while (!ctx->IsCancelled()) {
      if (!pending_.empty()) {
        v1::Assignment a = pending_.front();
        pending_.pop_front();
        lock.unlock();
        writer->Write(a);
        lock.lock();
        continue;
      }
      cv_.wait_for(lock, 20ms);
    }
    return grpc::Status::OK;
  }
  grpc::Status ReportEvents(grpc::ServerContext*, const v1::ReportEventsRequest* req,
                            v1::ReportEventsResponse*) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : req->events()) events_.push_back(e);
    return grpc::Status::OK;
  }

  void Send(v1::Assignment a) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(std::move(a));
    cv_.notify_all();
  }
  void ForgetWorkers(bool forget) {
    std::lock_guard<std::mutex> lock(mu_);
    forget_workers_ = forget;
  }
  std::vector<v1::RegisterRequest> Registrations() {
    std::lock_guard<std::mutex> lock(mu_);
    return registrations_;
  }
  std::vector<v1::HeartbeatRequest> Heartbeats() {
    std::lock_guard<std::mutex> lock(mu_);
    return heartbeats_;
  }
  std::vector<v1::TrainerEvent> Events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool forget_workers_ = false;
  std::deque<v1::Assignment> pending_;
  std::vector<std::string> streams_for_;
  std::vector<v1::RegisterRequest> registrations_;
  std::vector<v1::HeartbeatRequest> heartbeats_;
  std::vector<v1::TrainerEvent> events_;
};

// A coordinator that is up but answers every call UNAVAILABLE, as one still starting would, and
// keeps what it turned away: an outage whose progress a test can wait on instead of sleeping.
class UnavailableCoordinator final : public v1::WorkerService::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest*,
                        v1::RegisterResponse*) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++refused_registrations_;
    return Refused();
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override {
    return Refused();
  }
  grpc::Status Assignments(grpc::ServerContext*, const v1::AssignmentsRequest*,
                           grpc::ServerWriter<v1::Assignment>*) override {
    return Refused();
  }
  grpc::Status ReportEvents(grpc::ServerContext*, const v1::ReportEventsRequest* req,
                            v1::ReportEventsResponse*) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : req->events()) refused_events_.push_back(e);
    return Refused();
  }

  int RefusedRegistrations() {
    std::lock_guard<std::mutex> lock(mu_);
    return refused_registrations_;
  }
  std::vector<v1::TrainerEvent> RefusedEvents() {
    std::lock_guard<std::mutex> lock(mu_);
    return refused_events_;
  }

 private:
  static grpc::Status Refused() {
    return {grpc::StatusCode::UNAVAILABLE, "the coordinator is starting"};
  }

  std::mutex mu_;
  int refused_registrations_ = 0;
  std::vector<v1::TrainerEvent> refused_events_;
};

// A coordinator service served on 127.0.0.1:<port> (port 0 picks a free one).
class Served {
 public:
  Served(v1::WorkerService::Service* service, int port) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(service);
    server_ = builder.BuildAndStart();
  }
  ~Served() { server_->Shutdown(std::chrono::system_clock::now() + 200ms); }
  int port() const { return port_; }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

inline v1::Assignment StartOrder(const std::string& job_id, const std::string& spec) {
  v1::Assignment a;
  a.set_kind(v1::Assignment::KIND_START);
  a.set_job_id(job_id);
  a.set_spec_yaml(spec);
  a.set_world_size(1);
  return a;
}

inline bool HasExitFor(const std::vector<v1::TrainerEvent>& events, const std::string& job_id) {
  for (const auto& e : events) {
    if (e.job_id() == job_id && e.has_exit()) return true;
  }
  return false;
}

}  // namespace qlorad::agent::testing
