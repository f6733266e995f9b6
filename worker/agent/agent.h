// qlorad-worker's session with the coordinator: registers, heartbeats, holds the Assignments
// stream open (reconnecting and re-registering when the coordinator goes away or restarts),
// runs the assigned trainer and reports its events. Keeps running while the coordinator is down.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "client/connect/connect.h"
#include "common/status.h"
#include "qlorad/v1/workers.grpc.pb.h"
#include "worker/agent/event_reporter.h"
#include "worker/agent/job_slot.h"

namespace qlorad::agent {

struct AgentOptions {
  std::string coordinator = "127.0.0.1:50051";
  std::string name;         // stable worker name, e.g. "host-gpu0"
  std::string hostname;     // how other hosts reach this one (--advertise-address, or its name)
  int rendezvous_port = 0;  // the port main() holds for rank 0's store of the jobs run here
  v1::DeviceInfo device;
  // The GPU's free memory now (device_probe.h DetectGpuFreeMemory); empty: not probed (a CPU).
  std::function<StatusOr<int64_t>()> gpu_free_memory;
  TrainerSetup trainer;
  std::chrono::milliseconds grace_period{10000};
  std::chrono::milliseconds max_backoff{5000};      // reconnect and retry backoff ceiling
  std::chrono::milliseconds shutdown_flush{10000};  // how long Stop tries to deliver events
  std::string version;
  // TLS and the worker's credential (client/connect/connect.h; enrollment.h gets the credential).
  connect::ChannelSecurity security;
};

class Agent {
 public:
  explicit Agent(AgentOptions options);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Runs until Stop(); then cancels the running trainer (SIGTERM, grace, SIGKILL), delivers the
  // remaining events (within shutdown_flush) and returns.
  Status Run();
  // Thread-safe; not async-signal-safe (call it from a thread that waits for signals).
  void Stop();

 private:
  bool Stopping();
  // Sleeps up to `d`, returning early (false) when stopping.
  bool SleepUnlessStopping(std::chrono::milliseconds d);
  // Registers, retrying with backoff until it works; false when stopping.
  bool Register();
  // Reads START/CANCEL orders until the stream ends; returns how it ended.
  grpc::Status ReadAssignments();
  void HeartbeatLoop();
  Status SendEvents(const std::vector<v1::TrainerEvent>& batch);
  // What Register reports: the running trainer, and attempts with events still queued.
  std::vector<v1::RunningAttempt> RunningAttempts();
  std::string WorkerId();
  // The GPU's free memory while no trainer runs (one that runs holds memory a job placed next
  // will find free again), for Register and heartbeats; nullopt otherwise, or when the probe
  // fails (said once as a warning).
  std::optional<int64_t> IdleGpuFreeMemory();

  const AgentOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  // Why the coordinator refused to register this worker (a missing, revoked or foreign
  // credential): retrying cannot help, so the agent stops and Run returns it.
  Status refused_;
  std::string worker_id_;  // empty while not registered
  std::chrono::milliseconds heartbeat_interval_{5000};
  grpc::ClientContext* stream_context_ = nullptr;  // the open Assignments call, for TryCancel
  std::atomic<bool> free_probe_warned_{false};

  // Declared after the session state: the slot's trainer pushes into the reporter, whose sender
  // reads worker_id_.
  EventReporter reporter_;
  JobSlot slot_;
};

}  // namespace qlorad::agent
