// Shared by the server tests: a temp directory, job specs, an in-process coordinator on a
// loopback port, and a fake worker that speaks WorkerService through the generated stubs.
#pragma once

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "qlorad/v1/jobs.grpc.pb.h"
#include "qlorad/v1/workers.grpc.pb.h"
#include "server/server.h"
#include "tests/unit/manual_clock.h"

namespace qlorad::server::testing {

using namespace std::chrono_literals;
using qlorad::testing::ManualClock;

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / fmt::format("qlorad-server-test-{:x}", rd());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

struct SpecOptions {
  std::string name = "tiny";
  int priority = 50;
  int max_restarts = 3;
  int gpus = 1;
  int max_steps = 10;
};

inline std::string SpecYaml(const SpecOptions& o = {}) {
  return fmt::format(
      "name: {}\n"
      "model: {{path: /models/tiny}}\n"
      "data: {{path: data/train.jsonl}}\n"
      "train: {{max_steps: {}, lr: 1.0e-4}}\n"
      "resources: {{gpus: {}, device: cpu}}\n"
      "scheduling: {{priority: {}, max_restarts: {}}}\n",
      o.name, o.max_steps, o.gpus, o.priority, o.max_restarts);
}

// A job record with only what the store needs: an id, a name, RUNNING, a one-line spec.
inline JobRecord MinimalJob(const std::string& id) {
  JobRecord r;
  r.job.set_id(id);
  r.job.set_name("n");
  r.job.set_state(v1::JOB_STATE_RUNNING);
  r.job.set_spec_yaml("name: n\n");
  return r;
}

// Polls until pred holds or the deadline passes; returns whether it held. The timeout only
// bounds a hang: generous, so a loaded machine is never mistaken for a broken coordinator.
inline bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

// A coordinator in this process on 127.0.0.1:<free port>, HTTP off unless asked. Its heartbeat
// deadlines run on clock(), which moves only when a test advances it.
class TestServer {
 public:
  explicit TestServer(const std::string& db_path, std::chrono::milliseconds heartbeat_timeout = 30s,
                      size_t queue_capacity = 1024, std::string http = "off",
                      HttpOptions http_options = {}) {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.http = std::move(http);
    options.http_options = http_options;
    options.grace_period = 1s;
    // Calls without a token act as the local admin; auth_test.cc runs with tokens.
    options.security.insecure_local = true;
    options.coordinator.db_path = db_path;
    options.coordinator.heartbeat_timeout = heartbeat_timeout;
    options.coordinator.tick = 20ms;
    options.coordinator.subscriber_queue_capacity = queue_capacity;
    options.coordinator.now = clock_.AsFunction();
    auto server = QloradServer::Start(options);
    if (!server.ok()) throw std::runtime_error(server.status().ToString());
    server_ = std::move(server).value();
    channel_ = grpc::CreateChannel(server_->grpc_address(), grpc::InsecureChannelCredentials());
    jobs_ = v1::JobService::NewStub(channel_);
  }

  QloradServer& server() { return *server_; }
  ManualClock& clock() { return clock_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  v1::JobService::Stub& jobs() { return *jobs_; }

  v1::Job Submit(const std::string& spec_yaml) {
    grpc::ClientContext ctx;
    v1::SubmitJobRequest request;
    request.set_spec_yaml(spec_yaml);
    v1::Job job;
    grpc::Status status = jobs_->SubmitJob(&ctx, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  v1::Job Get(const std::string& job_id) {
    grpc::ClientContext ctx;
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    v1::Job job;
    grpc::Status status = jobs_->GetJob(&ctx, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  grpc::Status Cancel(const std::string& job_id, v1::Job* job) {
    grpc::ClientContext ctx;
    v1::CancelJobRequest request;
    request.set_job_id(job_id);
    return jobs_->CancelJob(&ctx, request, job);
  }

  bool WaitForState(const std::string& job_id, v1::JobState state,
                    std::chrono::milliseconds timeout = 5s) {
    return WaitFor([&] { return Get(job_id).state() == state; }, timeout);
  }

  // Every stored log line of the job (the stream ends because the job is terminal, or after
  // the deadline for a live one).
  std::vector<v1::LogLine> Logs(const std::string& job_id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 300ms);
    v1::StreamLogsRequest request;
    request.set_job_id(job_id);
    auto reader = jobs_->StreamLogs(&ctx, request);
    std::vector<v1::LogLine> lines;
    v1::LogLine line;
    while (reader->Read(&line)) lines.push_back(line);
    reader->Finish();
    return lines;
  }

 private:
  ManualClock clock_;  // before server_: the coordinator reads it until it stops
  std::unique_ptr<QloradServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
};

// A worker agent reduced to the protocol: register, hold the Assignments stream, report.
class FakeWorker {
 public:
  FakeWorker(std::shared_ptr<grpc::Channel> channel, std::string name)
      : stub_(v1::WorkerService::NewStub(channel)), name_(std::move(name)) {}
  ~FakeWorker() { CloseAssignments(); }

  // `running`: the attempts it reports, as the orders that started them (a restarted agent
  // that still runs trainers).
  void Register(const std::vector<v1::Assignment>& running = {}) {
    grpc::ClientContext ctx;
    v1::RegisterRequest request;
    request.set_name(name_);
    for (const v1::Assignment& order : running) {
      v1::RunningAttempt* a = request.add_attempts();
      a->set_job_id(order.job_id());
      a->set_attempt(order.attempt());
      a->set_rank(order.rank());
      a->set_pid(4242);
    }
    request.set_hostname("127.0.0.1");
    request.set_rendezvous_port(rendezvous_port_);
    *request.add_devices() = device_;
    v1::RegisterResponse response;
    grpc::Status status = stub_->Register(&ctx, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    worker_id_ = response.worker_id();
    heartbeat_interval_ms_ = response.heartbeat_interval_ms();
    adopted_ = response.adopted_size();
  }

  // The port it says it holds for rank 0's store (RegisterRequest.rendezvous_port); 0: none.
  void set_rendezvous_port(int port) { rendezvous_port_ = port; }

  // Register, then hold the Assignments stream open on a thread.
  void Connect(const std::vector<v1::Assignment>& running = {}) {
    Register(running);
    OpenAssignments();
  }

  void OpenAssignments() {
    CloseAssignments();
    stream_done_ = false;
    context_ = std::make_unique<grpc::ClientContext>();
    reader_thread_ = std::thread([this] {
      v1::AssignmentsRequest request;
      request.set_worker_id(worker_id_);
      auto reader = stub_->Assignments(context_.get(), request);
      v1::Assignment order;
      while (reader->Read(&order)) {
        std::lock_guard<std::mutex> lock(mu_);
        orders_.push_back(order);
        cv_.notify_all();
      }
      grpc::Status status = reader->Finish();
      std::lock_guard<std::mutex> lock(mu_);
      stream_status_ = status;
      stream_done_ = true;
      cv_.notify_all();
    });
  }

  void CloseAssignments() {
    if (!reader_thread_.joinable()) return;
    context_->TryCancel();
    reader_thread_.join();
  }

  std::optional<v1::Assignment> NextOrder(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !orders_.empty(); })) return std::nullopt;
    v1::Assignment order = orders_.front();
    orders_.pop_front();
    return order;
  }

  // The status the Assignments stream ended with, once it ended.
  std::optional<grpc::Status> StreamEnd(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return stream_done_; })) return std::nullopt;
    return stream_status_;
  }

  grpc::Status Report(const std::vector<v1::TrainerEvent>& events) {
    grpc::ClientContext ctx;
    // Far beyond any report's real time: one that waits on something fails instead of hanging.
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    v1::ReportEventsRequest request;
    request.set_worker_id(worker_id_);
    for (const auto& e : events) *request.add_events() = e;
    v1::ReportEventsResponse response;
    return stub_->ReportEvents(&ctx, request, &response);
  }

  // What Register reports (a CPU unless set before it).
  void SetDevice(v1::DeviceInfo device) { device_ = std::move(device); }
  // A GPU of `total` bytes, `free` of them free while idle (-1: free not reported).
  void SetGpu(int64_t total, int64_t free = -1) {
    device_.set_kind("cuda");
    device_.set_name("test gpu");
    device_.set_total_memory_bytes(total);
    if (free >= 0) device_.set_free_memory_bytes(free);
  }

  bool Heartbeat(const std::vector<std::string>& running_job_ids = {},
                 std::optional<int64_t> gpu_free_memory_bytes = std::nullopt) {
    grpc::ClientContext ctx;
    v1::HeartbeatRequest request;
    request.set_worker_id(worker_id_);
    for (const auto& id : running_job_ids) request.add_running_job_ids(id);
    if (gpu_free_memory_bytes) request.set_gpu_free_memory_bytes(*gpu_free_memory_bytes);
    v1::HeartbeatResponse response;
    EXPECT_TRUE(stub_->Heartbeat(&ctx, request, &response).ok());
    return response.known();
  }

  const std::string& worker_id() const { return worker_id_; }
  int heartbeat_interval_ms() const { return heartbeat_interval_ms_; }
  // How many reported attempts the last registration adopted.
  int adopted() const { return adopted_; }

 private:
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::string name_;
  v1::DeviceInfo device_ = [] {
    v1::DeviceInfo cpu;
    cpu.set_kind("cpu");
    cpu.set_name("test cpu");
    return cpu;
  }();
  std::string worker_id_;
  int heartbeat_interval_ms_ = 0;
  int adopted_ = 0;
  int rendezvous_port_ = 0;
  std::unique_ptr<grpc::ClientContext> context_;
  std::thread reader_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::Assignment> orders_;
  bool stream_done_ = false;
  grpc::Status stream_status_;
};

// A coordinator with one connected worker, and a way to submit a job and take its START order.
struct OneWorker {
  explicit OneWorker(std::chrono::milliseconds heartbeat_timeout = 30s,
                     size_t queue_capacity = 1024, std::string http = "off")
      : server(dir.File("qlorad.db"), heartbeat_timeout, queue_capacity, std::move(http)),
        worker(server.channel(), "host-gpu0") {
    worker.Connect();
  }

  // The submitted job and the START it got (a default Assignment, and a test failure, if none).
  std::pair<v1::Job, v1::Assignment> StartJob(const std::string& spec = SpecYaml()) {
    v1::Job job = server.Submit(spec);
    auto order = worker.NextOrder();
    EXPECT_TRUE(order.has_value()) << "no START for " << job.id();
    return {job, order.value_or(v1::Assignment())};
  }

  TempDir dir;
  TestServer server;
  FakeWorker worker;
};

// Trainer events for the attempt an order started.
inline v1::TrainerEvent EventFor(const v1::Assignment& order) {
  v1::TrainerEvent e;
  e.set_job_id(order.job_id());
  e.set_attempt(order.attempt());
  e.set_rank(order.rank());
  return e;
}

inline v1::TrainerEvent MetricsEvent(const v1::Assignment& order, int64_t step, double loss) {
  v1::TrainerEvent e = EventFor(order);
  e.mutable_metrics()->set_step(step);
  e.mutable_metrics()->set_loss(loss);
  e.mutable_metrics()->set_tokens_per_s(1000.0 + static_cast<double>(step));
  return e;
}

inline v1::TrainerEvent CheckpointEvent(const v1::Assignment& order, int64_t step,
                                        const std::string& path) {
  v1::TrainerEvent e = EventFor(order);
  e.mutable_checkpoint()->set_step(step);
  e.mutable_checkpoint()->set_path(path);
  return e;
}

inline v1::TrainerEvent DoneEvent(const v1::Assignment& order, const std::string& adapter) {
  v1::TrainerEvent e = EventFor(order);
  e.mutable_done()->set_adapter_path(adapter);
  return e;
}

inline v1::TrainerEvent ErrorEvent(const v1::Assignment& order, const std::string& message,
                                   const std::string& field) {
  v1::TrainerEvent e = EventFor(order);
  e.mutable_error()->set_message(message);
  e.mutable_error()->set_field(field);
  return e;
}

inline v1::TrainerEvent ExitEvent(const v1::Assignment& order, int code, int signal = 0,
                                  const std::string& stderr_tail = "", bool cancelled = false) {
  v1::TrainerEvent e = EventFor(order);
  e.mutable_exit()->set_exit_code(code);
  e.mutable_exit()->set_signal(signal);
  e.mutable_exit()->set_stderr_tail(stderr_tail);
  e.mutable_exit()->set_cancelled(cancelled);
  return e;
}

}  // namespace qlorad::server::testing
