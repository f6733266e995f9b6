#include "worker/agent/agent.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "proto/keepalive.h"

namespace qlorad::agent {
namespace {

constexpr auto kRpcDeadline = std::chrono::seconds(10);
constexpr auto kInitialBackoff = std::chrono::milliseconds(100);
constexpr auto kHealthyStream = std::chrono::seconds(10);

std::chrono::system_clock::time_point RpcDeadline() {
  return std::chrono::system_clock::now() + kRpcDeadline;
}

std::shared_ptr<grpc::Channel> MakeChannel(const AgentOptions& options) {
  grpc::ChannelArguments args;
  // gRPC's own reconnect backoff grows to two minutes; a restarted coordinator should see its
  // workers back within our own backoff instead.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(options.max_backoff.count()));
  // Notice a coordinator host that vanished without closing the connection.
  SetClientKeepalive(args);
  return connect::Connect(options.coordinator, options.security, args);
}

std::string Describe(const grpc::Status& s) {
  return std::to_string(static_cast<int>(s.error_code())) + " " + s.error_message();
}

}  // namespace

Agent::Agent(AgentOptions options)
    : options_(std::move(options)),
      channel_(MakeChannel(options_)),
      stub_(v1::WorkerService::NewStub(channel_)),
      reporter_([this](const std::vector<v1::TrainerEvent>& batch) { return SendEvents(batch); },
                EventReporter::Options{.max_backoff = options_.max_backoff}),
      slot_(options_.trainer, options_.grace_period,
            [this](v1::TrainerEvent event) { reporter_.Push(std::move(event)); }) {}

Agent::~Agent() {
  Stop();
}

void Agent::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return;
  stopping_ = true;
  if (stream_context_ != nullptr) stream_context_->TryCancel();
  cv_.notify_all();
}

bool Agent::Stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

bool Agent::SleepUnlessStopping(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  return !cv_.wait_for(lock, d, [this] { return stopping_; });
}

std::string Agent::WorkerId() {
  std::lock_guard<std::mutex> lock(mu_);
  return worker_id_;
}

std::optional<int64_t> Agent::IdleGpuFreeMemory() {
  if (!options_.gpu_free_memory || !slot_.RunningJobIds().empty()) return std::nullopt;
  const StatusOr<int64_t> bytes = options_.gpu_free_memory();
  if (!bytes.ok()) {
    // Placement then goes by the total memory; every heartbeat would repeat the same reason.
    if (!free_probe_warned_.exchange(true)) {
      spdlog::warn(
          "cannot measure the GPU's free memory ({}); the coordinator places jobs by "
          "its total memory until it can",
          bytes.status().ToString());
    }
    return std::nullopt;
  }
  // A trainer that started meanwhile may have been loading while nvidia-smi looked.
  if (!slot_.RunningJobIds().empty()) return std::nullopt;
  return *bytes;
}

bool Agent::Register() {
  std::chrono::milliseconds backoff = kInitialBackoff;
  v1::RegisterRequest request;
  request.set_name(options_.name);
  request.set_hostname(options_.hostname);
  request.set_rendezvous_port(options_.rendezvous_port);
  *request.add_devices() = options_.device;
  request.set_version(options_.version);
  const PathRoots& roots = options_.trainer.roots;
  request.mutable_paths()->set_work_dir(roots.base.string());
  for (const auto& r : roots.read) request.mutable_paths()->add_read_roots(r.string());
  request.mutable_paths()->set_write_root(roots.write.string());
  bool warned = false;
  while (!Stopping()) {
    // Listed afresh on every try: a trainer may end while the coordinator is away.
    request.clear_attempts();
    for (v1::RunningAttempt& a : RunningAttempts()) *request.add_attempts() = std::move(a);
    request.mutable_devices(0)->clear_free_memory_bytes();
    if (const std::optional<int64_t> bytes = IdleGpuFreeMemory()) {
      request.mutable_devices(0)->set_free_memory_bytes(*bytes);
    }
    grpc::ClientContext context;
    context.set_deadline(RpcDeadline());
    v1::RegisterResponse response;
    const grpc::Status status = stub_->Register(&context, request, &response);
    if (status.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      worker_id_ = response.worker_id();
      if (response.heartbeat_interval_ms() > 0) {
        heartbeat_interval_ = std::chrono::milliseconds(response.heartbeat_interval_ms());
      }
      spdlog::info("registered with {} as {} (worker id {}, heartbeat every {} ms)",
                   options_.coordinator, options_.name, worker_id_, heartbeat_interval_.count());
      for (const v1::RunningAttempt& a : request.attempts()) {
        const bool adopted = std::any_of(
            response.adopted().begin(), response.adopted().end(), [&](const v1::RunningAttempt& b) {
              return a.job_id() == b.job_id() && a.attempt() == b.attempt();
            });
        spdlog::info("job {} attempt {} rank {} (pid {}, step {}): {}", a.job_id(), a.attempt(),
                     a.rank(), a.pid(), a.last_step(),
                     adopted ? "adopted by the coordinator" : "to be stopped");
      }
      cv_.notify_all();
      return true;
    }
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
        status.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      std::lock_guard<std::mutex> lock(mu_);
      refused_ = PermissionDenied(options_.coordinator + " refused worker " + options_.name + ": " +
                                  status.error_message() +
                                  " (its credential: --credential-file, --enroll-token)");
      stopping_ = true;
      cv_.notify_all();
      return false;
    }
    // Say it once at warning level; a coordinator that is down for an hour should not flood logs.
    if (!warned) {
      spdlog::warn("cannot register with {}: {}; retrying", options_.coordinator, Describe(status));
      warned = true;
    } else {
      spdlog::debug("register: {}", Describe(status));
    }
    if (!SleepUnlessStopping(backoff)) return false;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  return false;
}

grpc::Status Agent::ReadAssignments() {
  grpc::ClientContext context;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return grpc::Status::CANCELLED;
    stream_context_ = &context;
  }
  v1::AssignmentsRequest request;
  request.set_worker_id(WorkerId());
  std::unique_ptr<grpc::ClientReader<v1::Assignment>> reader =
      stub_->Assignments(&context, request);
  v1::Assignment assignment;
  while (reader->Read(&assignment)) {
    spdlog::info("assignment {} for job {} attempt {}",
                 v1::Assignment::Kind_Name(assignment.kind()), assignment.job_id(),
                 assignment.attempt());
    slot_.Handle(assignment);
  }
  const grpc::Status status = reader->Finish();
  std::lock_guard<std::mutex> lock(mu_);
  stream_context_ = nullptr;
  return status;
}

void Agent::HeartbeatLoop() {
  while (true) {
    std::chrono::milliseconds interval;
    std::string worker_id;
    {
      std::unique_lock<std::mutex> lock(mu_);
      interval = heartbeat_interval_;
      const std::string seen = worker_id_;
      // A (re)registration wakes us: its response may have brought a new interval.
      if (cv_.wait_for(lock, interval, [&] { return stopping_ || worker_id_ != seen; })) {
        if (stopping_) return;
        continue;
      }
      worker_id = worker_id_;
    }
    if (worker_id.empty()) continue;
    v1::HeartbeatRequest request;
    request.set_worker_id(worker_id);
    // An idle figure only; the coordinator also ignores one from a worker it has given a job.
    if (const std::optional<int64_t> bytes = IdleGpuFreeMemory()) {
      request.set_gpu_free_memory_bytes(*bytes);
    }
    for (const std::string& id : slot_.RunningJobIds()) request.add_running_job_ids(id);
    grpc::ClientContext context;
    context.set_deadline(RpcDeadline());
    v1::HeartbeatResponse response;
    const grpc::Status status = stub_->Heartbeat(&context, request, &response);
    if (!status.ok()) {
      spdlog::debug("heartbeat: {}", Describe(status));
      continue;
    }
    if (!response.known()) {
      // The coordinator restarted and forgot us: end the stream so the session registers again.
      spdlog::warn("coordinator does not know worker id {}; registering again", worker_id);
      std::lock_guard<std::mutex> lock(mu_);
      if (worker_id_ == worker_id) worker_id_.clear();
      if (stream_context_ != nullptr) stream_context_->TryCancel();
    }
  }
}

std::vector<v1::RunningAttempt> Agent::RunningAttempts() {
  std::vector<v1::RunningAttempt> attempts = slot_.RunningAttempts();
  for (v1::RunningAttempt& pending : reporter_.UndeliveredAttempts()) {
    const bool listed = std::any_of(attempts.begin(), attempts.end(), [&](const auto& a) {
      return a.job_id() == pending.job_id() && a.attempt() == pending.attempt() &&
             a.rank() == pending.rank();
    });
    if (!listed) attempts.push_back(std::move(pending));
  }
  return attempts;
}

Status Agent::SendEvents(const std::vector<v1::TrainerEvent>& batch) {
  const std::string worker_id = WorkerId();
  if (worker_id.empty()) return Unavailable("not registered with the coordinator");
  v1::ReportEventsRequest request;
  request.set_worker_id(worker_id);
  for (const v1::TrainerEvent& event : batch) *request.add_events() = event;
  grpc::ClientContext context;
  context.set_deadline(RpcDeadline());
  v1::ReportEventsResponse response;
  const grpc::Status status = stub_->ReportEvents(&context, request, &response);
  if (!status.ok()) return Unavailable("ReportEvents: " + Describe(status));
  return Status::Ok();
}

Status Agent::Run() {
  spdlog::info("qlorad-worker {} ({} {} '{}', {} bytes) for coordinator {}", options_.name,
               options_.device.kind(), options_.device.index(), options_.device.name(),
               options_.device.total_memory_bytes(), options_.coordinator);
  std::thread heartbeat([this] { HeartbeatLoop(); });
  std::chrono::milliseconds backoff = kInitialBackoff;
  // Every new stream starts with a Register: it is how a restarted coordinator learns about us,
  // and re-registering under the same name replaces the old entry.
  while (Register()) {
    const auto opened = std::chrono::steady_clock::now();
    const grpc::Status ended = ReadAssignments();
    if (Stopping()) break;
    // A stream that lived a while was healthy: the next failure starts the backoff afresh. One
    // that fails at once (a coordinator that keeps refusing it) backs off further each time.
    if (std::chrono::steady_clock::now() - opened > kHealthyStream) backoff = kInitialBackoff;
    spdlog::warn("assignments stream ended ({}); reconnecting", Describe(ended));
    if (!SleepUnlessStopping(backoff)) break;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  heartbeat.join();
  slot_.CancelAndWait();
  const std::size_t lost =
      reporter_.Stop(std::chrono::steady_clock::now() + options_.shutdown_flush);
  if (lost > 0) {
    return Unavailable(std::to_string(lost) + " trainer events could not be delivered to " +
                       options_.coordinator + " before shutdown");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!refused_.ok()) return refused_;
  spdlog::info("stopped");
  return Status::Ok();
}

}  // namespace qlorad::agent
