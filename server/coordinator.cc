#include "server/coordinator.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

#include "server/ids.h"
#include "server/job_validation.h"

namespace qlorad::server {
namespace {

std::string DeviceSummary(const v1::RegisterRequest& request) {
  std::string summary;
  for (const auto& d : request.devices()) {
    if (!summary.empty()) summary += ", ";
    summary += fmt::format("{}:{} {}", d.kind(), d.index(), d.name());
  }
  return summary;
}

spdlog::level::level_enum SpdlogLevel(const std::string& level) {
  if (level == "error") return spdlog::level::err;
  if (level == "warning") return spdlog::level::warn;
  if (level == "debug") return spdlog::level::debug;
  return spdlog::level::info;
}

}  // namespace

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options) {
  QLORAD_ASSIGN_OR_RETURN(auto store, Store::Open(options.db_path));
  std::unique_ptr<Coordinator> c(new Coordinator(std::move(options), std::move(store)));
  // Workers of a previous coordinator must register again; until then none is online.
  QLORAD_RETURN_IF_ERROR(c->store_->MarkAllWorkersOffline());
  QLORAD_RETURN_IF_ERROR(c->RecoverJobsLeftRunning());
  return c;
}

Coordinator::Coordinator(CoordinatorOptions options, std::unique_ptr<Store> store)
    : options_(std::move(options)),
      store_(std::move(store)),
      metrics_hub_(options_.subscriber_queue_capacity),
      log_hub_(options_.subscriber_queue_capacity) {}

Coordinator::~Coordinator() {
  Stop();
}

void Coordinator::Start() {
  tick_thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopped_) {
      tick_cv_.wait_for(lock, options_.tick);
      if (stopped_) break;
      lock.unlock();
      Tick();
      lock.lock();
    }
  });
}

void Coordinator::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
  }
  tick_cv_.notify_all();
  orders_cv_.notify_all();
  metrics_hub_.Close();
  log_hub_.Close();
  changes_.Close();
  if (tick_thread_.joinable()) tick_thread_.join();
}

bool Coordinator::stopped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stopped_;
}

Status Coordinator::Mutate(const std::function<Status(Published&)>& body) {
  Published out;
  Status status = store_->Transaction([&] { return body(out); });
  if (status.ok()) PublishLocked(out);
  return status;
}

void Coordinator::PublishLocked(const Published& out) {
  for (const auto& m : out.metrics) metrics_hub_.Publish(m.value.job_id(), m.cursor, m.value);
  for (const auto& line : out.logs) log_hub_.Publish(line.job_id(), line.seq(), line);
  for (const auto& job_id : out.finished_jobs) {
    metrics_hub_.Finish(job_id);
    log_hub_.Finish(job_id);
  }
  if (!out.metrics.empty() || !out.logs.empty() || !out.finished_jobs.empty()) changes_.Bump();
}

Status Coordinator::Log(const std::string& job_id, const std::string& level,
                        const std::string& message, Published& out) {
  spdlog::log(SpdlogLevel(level), "{}: {}", job_id, message);
  v1::LogLine line;
  line.set_job_id(job_id);
  line.set_level(level);
  line.set_message(message);
  line.set_source("coordinator");
  line.set_unix_ms(NowUnixMs());
  QLORAD_ASSIGN_OR_RETURN(v1::LogLine stored, store_->AppendLog(std::move(line)));
  out.logs.push_back(std::move(stored));
  return Status::Ok();
}

StatusOr<v1::Job> Coordinator::SubmitJob(const std::string& spec_yaml, const std::string& owner) {
  JobSpec spec;
  auto record = NewJobFromSpec(spec_yaml, NowUnixMs(), options_.max_spec_bytes, &spec);
  if (!record.ok()) {
    spdlog::info("rejected a job: {}", record.status().message());
    return record.status();
  }
  record->job.set_owner(owner);
  const v1::Job& job = record->job;
  const std::string note = fmt::format(
      "submitted '{}' by {} (priority {}, {} GPU(s), {} steps, max {} restarts)", job.name(), owner,
      job.priority(), job.gpus(), job.total_steps(), job.max_restarts());
  return Enqueue(std::move(record).value(), spec, note);
}

StatusOr<v1::Job> Coordinator::RetryJob(const std::string& job_id, bool from_scratch,
                                        const std::string& by) {
  if (job_id.empty()) return InvalidArgument("job_id: is required");
  QLORAD_ASSIGN_OR_RETURN(const JobRecord original, store_->GetJob(job_id));
  const v1::JobState state = original.job.state();
  if (state != v1::JOB_STATE_FAILED && state != v1::JOB_STATE_CANCELLED) {
    return FailedPrecondition(fmt::format(
        "job {} is {}: only a FAILED or CANCELLED job can be retried{}", job_id,
        JobStateName(state), IsTerminal(state) ? "" : " (cancel it first to start it over)"));
  }
  JobSpec spec;
  // The spec is checked again: the coordinator's limits (--max-spec-bytes) or the spec rules may
  // have changed since the original was submitted.
  auto record =
      NewJobFromSpec(original.job.spec_yaml(), NowUnixMs(), options_.max_spec_bytes, &spec);
  if (!record.ok()) {
    return Status(record.status().code(),
                  "job " + job_id + "'s spec: " + std::string(record.status().message()));
  }
  v1::Job& job = record->job;
  job.set_owner(original.job.owner());  // an admin's retry stays the owner's job
  job.set_priority(original.job.priority());
  job.set_retry_of(job_id);
  // Attempt numbers go on from the original's so that this job's checkpoints land in a folder
  // of their own (checkpoints/attempt-N): a retry from scratch would otherwise write step-N
  // where the original's step-N already is, and prune the original's checkpoints as its own.
  job.set_attempt(original.job.attempt() + 1);
  std::string from;
  if (from_scratch) {
    from = "from step 0 (from scratch)";
  } else if (original.last_checkpoint.empty()) {
    from = "from step 0 (" + job_id + " left no checkpoint)";
  } else {
    // What a requeued attempt does: the trainer falls back to the newest complete checkpoint
    // under the output_dir when this one is gone.
    record->last_checkpoint = original.last_checkpoint;
    from = "resuming from " + original.last_checkpoint;
  }
  const std::string note =
      fmt::format("retry of {} ({}) by {}, {}", job_id, JobStateName(state), by, from);
  return Enqueue(std::move(record).value(), spec, note);
}

StatusOr<v1::Job> Coordinator::Enqueue(JobRecord record, const JobSpec& spec,
                                       const std::string& note) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t created = std::max(record.job.created_unix_ms(), last_created_unix_ms_ + 1);
  record.job.set_created_unix_ms(created);
  last_created_unix_ms_ = created;
  std::vector<WorkerRoots> roots;
  for (const auto& [id, w] : workers_) {
    if (w.roots) roots.emplace_back(w.name, *w.roots);
  }
  if (Status paths = CheckPathsOnWorkers(spec, roots); !paths.ok()) {
    spdlog::info("rejected a job: {}", paths.message());
    return paths;
  }
  const v1::Job& job = record.job;
  Status written = Mutate([&](Published& out) -> Status {
    QLORAD_RETURN_IF_ERROR(store_->InsertJob(record));
    return Log(job.id(), "info", note, out);
  });
  if (!written.ok()) return written;
  ++counters_.jobs_submitted;
  Status scheduled = Mutate([&](Published& out) { return Schedule(out, true); });
  if (!scheduled.ok()) spdlog::error("scheduling failed: {}", scheduled.ToString());
  v1::Job submitted = job;
  FillQueuedFields(submitted);
  return submitted;
}

void Coordinator::FillQueuedFields(v1::Job& job) const {
  if (job.state() != v1::JOB_STATE_QUEUED) return;
  auto it = waiting_reasons_.find(job.id());
  if (it != waiting_reasons_.end()) job.set_waiting_reason(it->second);
  auto place = queue_positions_.find(job.id());
  if (place != queue_positions_.end()) {
    job.set_queue_position(place->second);
    job.set_queue_length(static_cast<int32_t>(queue_positions_.size()));
  }
}

StatusOr<v1::Job> Coordinator::GetJob(const std::string& job_id) {
  if (job_id.empty()) return InvalidArgument("job_id: is required");
  QLORAD_ASSIGN_OR_RETURN(JobRecord record, store_->GetJob(job_id));
  std::lock_guard<std::mutex> lock(mu_);
  FillQueuedFields(record.job);
  return record.job;
}

StatusOr<JobPage> Coordinator::ListJobs(const std::vector<v1::JobState>& states, int page_size,
                                        const std::string& page_token,
                                        const std::optional<std::string>& owner) {
  QLORAD_ASSIGN_OR_RETURN(const int size, ResolvePageSize(page_size));
  QLORAD_ASSIGN_OR_RETURN(const auto after, DecodePageToken(page_token));
  // One row more than the page says whether another page follows, so the last page has no token.
  QLORAD_ASSIGN_OR_RETURN(auto records, store_->ListJobSummaries(states, size + 1, after, owner));
  JobPage page;
  if (static_cast<int>(records.size()) > size) {
    records.resize(size);
    const v1::Job& last = records.back().job;
    page.next_page_token = EncodePageToken({last.created_unix_ms(), last.id()});
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : records) {
    FillQueuedFields(r.job);
    page.jobs.push_back(std::move(r.job));
  }
  return page;
}

StatusOr<v1::Job> Coordinator::CancelJob(const std::string& job_id) {
  if (job_id.empty()) return InvalidArgument("job_id: is required");
  std::lock_guard<std::mutex> lock(mu_);
  QLORAD_ASSIGN_OR_RETURN(JobRecord record, store_->GetJob(job_id));
  const v1::JobState state = record.job.state();
  if (IsTerminal(state)) {
    return FailedPrecondition("job " + job_id + " is already " + JobStateName(state));
  }
  Status written = Mutate([&](Published& out) -> Status {
    if (state == v1::JOB_STATE_QUEUED) {
      QLORAD_RETURN_IF_ERROR(Log(job_id, "info", "cancelled by a client while queued", out));
      return Finish(record, v1::JOB_STATE_CANCELLED, "", out);
    }
    if (record.cancel_requested) return Status::Ok();
    record.cancel_requested = true;
    QLORAD_RETURN_IF_ERROR(store_->UpdateJob(record));
    auto run = runs_.find(job_id);
    // No worker holds a live rank (after a restart, none has reported the attempt yet): no exit
    // will come to end the job, so it ends here; a trainer that turns up later is stopped.
    if (run == runs_.end() || !run->second.HasLiveRank()) {
      QLORAD_RETURN_IF_ERROR(
          Log(job_id, "info", "cancelled by a client; no worker holds a trainer of it", out));
      return Finish(record, v1::JOB_STATE_CANCELLED, "", out);
    }
    SendCancels(job_id, record.job.attempt(), run->second);
    return Log(job_id, "info", "cancel requested by a client; waiting for the trainer to exit",
               out);
  });
  if (!written.ok()) return written;
  return record.job;
}

StatusOr<v1::RegisterResponse> Coordinator::RegisterWorker(const v1::RegisterRequest& request) {
  if (request.name().empty()) return InvalidArgument("name: is required");
  for (int i = 0; i < request.attempts_size(); ++i) {
    if (request.attempts(i).job_id().empty()) {
      return InvalidArgument(fmt::format("attempts[{}].job_id: is required", i));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  WorkerState worker;
  worker.id = RandomId("worker-");
  worker.name = request.name();
  worker.hostname = request.hostname().empty() ? "127.0.0.1" : request.hostname();
  worker.devices.assign(request.devices().begin(), request.devices().end());
  worker.rendezvous_port = request.rendezvous_port();
  if (request.has_paths()) {
    const v1::WorkerPaths& p = request.paths();
    worker.roots =
        PathRoots{p.work_dir(), {p.read_roots().begin(), p.read_roots().end()}, p.write_root()};
  }
  worker.last_heartbeat = options_.now();
  // One device per agent; a GPU's memory bounds the jobs placed on it (scheduler.h).
  if (request.devices_size() > 0 && request.devices(0).kind() == "cuda") {
    worker.gpu_memory_bytes = request.devices(0).total_memory_bytes();
    if (request.devices(0).has_free_memory_bytes() && request.devices(0).free_memory_bytes() >= 0) {
      worker.gpu_free_bytes = request.devices(0).free_memory_bytes();
    }
  }
  const std::string worker_id = worker.id;
  std::vector<std::string> same_name;
  for (const auto& [id, w] : workers_) {
    if (w.name == request.name()) same_name.push_back(id);
  }
  // In the table before its attempts are reconciled: stop orders go to its outbox.
  workers_.emplace(worker_id, std::move(worker));
  queue_changed_ = true;  // jobs no worker could take may be in line now
  v1::RegisterResponse response;
  Status written = Mutate([&](Published& out) -> Status {
    // Adoption first: it takes the attempts it moves off the old entries, so dropping those
    // requeues only what the worker no longer runs.
    for (const v1::RunningAttempt& attempt : request.attempts()) {
      QLORAD_RETURN_IF_ERROR(AdoptOrStop(worker_id, same_name, attempt, response, out));
    }
    for (const auto& id : same_name) {
      QLORAD_RETURN_IF_ERROR(DropWorker(id, "it registered again", out));
    }
    const WorkerState& w = workers_.at(worker_id);
    WorkerRecord stored{w.id,        w.name, w.hostname, DeviceSummary(request), request.version(),
                        NowUnixMs(), true};
    return store_->UpsertWorker(stored);
  });
  if (!written.ok()) {
    workers_.erase(worker_id);
    return written;
  }
  changes_.Bump();
  spdlog::info("worker {} registered as {} on {} ({}); {} attempt(s) reported, {} adopted",
               request.name(), worker_id, workers_.at(worker_id).hostname, DeviceSummary(request),
               request.attempts_size(), response.adopted_size());
  response.set_worker_id(worker_id);
  const auto interval = options_.heartbeat_interval.count() > 0 ? options_.heartbeat_interval
                                                                : options_.heartbeat_timeout / 3;
  response.set_heartbeat_interval_ms(static_cast<int32_t>(std::max<int64_t>(interval.count(), 1)));
  return response;
}

bool Coordinator::WorkerState::Runs(const std::string& job_id) const {
  auto it = running.lower_bound({job_id, std::numeric_limits<int>::min()});
  return it != running.end() && it->first == job_id;
}

bool Coordinator::Heartbeat(const v1::HeartbeatRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(request.worker_id());
  if (it == workers_.end()) return false;
  WorkerState& worker = it->second;
  worker.last_heartbeat = options_.now();
  std::set<std::string> foreign;
  for (const auto& job_id : request.running_job_ids()) {
    if (!worker.Runs(job_id)) foreign.insert(job_id);
  }
  for (const auto& job_id : foreign) {
    if (worker.foreign_jobs.count(job_id)) continue;
    spdlog::warn("worker {} runs job {} that it was not given here; cancelling it", worker.name,
                 job_id);
    SendOrder(worker.id, CancelOrder(job_id, -1, 0));  // -1: whatever attempt it runs
  }
  const bool freed = !worker.foreign_jobs.empty() && foreign.empty();
  worker.foreign_jobs = std::move(foreign);
  // The worker measures free memory only while it runs no trainer; one measured before a START
  // it has not seen yet would still do, but one that crossed a trainer's start is not worth the
  // doubt: only a worker idle here too updates it.
  if (request.has_gpu_free_memory_bytes() && request.gpu_free_memory_bytes() >= 0 &&
      worker.gpu_memory_bytes >= 0 && worker.running.empty() && worker.foreign_jobs.empty() &&
      worker.gpu_free_bytes != request.gpu_free_memory_bytes()) {
    worker.gpu_free_bytes = request.gpu_free_memory_bytes();
    worker.devices.front().set_free_memory_bytes(worker.gpu_free_bytes);
    queue_changed_ = true;  // the waiting reasons name it
  }
  if (freed) {
    Status scheduled = Mutate([&](Published& out) { return Schedule(out); });
    if (!scheduled.ok()) spdlog::error("scheduling failed: {}", scheduled.ToString());
  }
  changes_.Bump();  // the workers page shows the heartbeat's age
  return true;
}

StatusOr<uint64_t> Coordinator::AttachOrders(const std::string& worker_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return NotFound("worker_id: " + worker_id + " is not registered");
  const uint64_t generation = next_generation_++;
  it->second.generation = generation;
  orders_cv_.notify_all();  // an older stream of this worker sees it was replaced and ends
  Status scheduled = Mutate([&](Published& out) { return Schedule(out); });
  if (!scheduled.ok()) spdlog::error("scheduling failed: {}", scheduled.ToString());
  return generation;
}

void Coordinator::DetachOrders(const std::string& worker_id, uint64_t generation) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it != workers_.end() && it->second.generation == generation) it->second.generation = 0;
}

StatusOr<std::optional<v1::Assignment>> Coordinator::PeekOrder(const std::string& worker_id,
                                                               uint64_t generation,
                                                               std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  auto ready = [&] {
    auto it = workers_.find(worker_id);
    return stopped_ || it == workers_.end() || it->second.generation != generation ||
           !it->second.outbox.empty();
  };
  orders_cv_.wait_for(lock, timeout, ready);
  if (stopped_) return Status(StatusCode::kCancelled, "the coordinator is shutting down");
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return NotFound("worker_id: " + worker_id + " is not registered");
  if (it->second.generation != generation) {
    return Status(StatusCode::kCancelled, "replaced by a newer Assignments stream");
  }
  // An order for an attempt this worker already reported the exit of is stale: a repeated
  // START would train again, a CANCEL would have nothing to stop.
  const WorkerState& worker = it->second;
  auto still_wanted = [&](const v1::Assignment& order) {
    if (worker.running.count({order.job_id(), order.attempt()})) return true;
    return order.kind() == v1::Assignment::KIND_CANCEL &&
           worker.foreign_jobs.count(order.job_id()) && !worker.Runs(order.job_id());
  };
  auto& outbox = it->second.outbox;
  while (!outbox.empty() && !still_wanted(outbox.front())) outbox.pop_front();
  if (outbox.empty()) return std::optional<v1::Assignment>();
  return std::optional<v1::Assignment>(outbox.front());
}

void Coordinator::PopOrder(const std::string& worker_id, uint64_t generation) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.generation != generation) return;
  if (!it->second.outbox.empty()) it->second.outbox.pop_front();
}

void Coordinator::SendOrder(const std::string& worker_id, v1::Assignment order) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return;
  it->second.outbox.push_back(std::move(order));
  orders_cv_.notify_all();
}

Status Coordinator::ReportEvents(const v1::ReportEventsRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  auto worker = workers_.find(request.worker_id());
  if (worker == workers_.end()) {
    return NotFound("worker_id: " + request.worker_id() + " is not registered");
  }
  worker->second.last_heartbeat = options_.now();  // a report is as good as a heartbeat
  return Mutate([&](Published& out) -> Status {
    for (const auto& event : request.events()) {
      QLORAD_RETURN_IF_ERROR(ApplyEvent(request.worker_id(), event, out));
    }
    return Schedule(out);
  });
}

void Coordinator::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return;
  const auto now = options_.now();
  std::vector<std::string> silent;
  for (const auto& [id, w] : workers_) {
    if (now - w.last_heartbeat > options_.heartbeat_timeout) silent.push_back(id);
  }
  Status status = Mutate([&](Published& out) -> Status {
    for (const auto& id : silent) {
      QLORAD_RETURN_IF_ERROR(DropWorker(
          id, fmt::format("no heartbeat for {} ms", options_.heartbeat_timeout.count()), out));
    }
    QLORAD_RETURN_IF_ERROR(ExpireUnclaimedRuns(out));
    return Schedule(out);
  });
  if (!status.ok()) spdlog::error("coordinator tick failed: {}", status.ToString());
}

Status Coordinator::Schedule(Published& out, bool even_if_none_free) {
  if (stopped_) return Status::Ok();
  std::vector<FreeWorker> free;
  const std::vector<FreeWorker> registered = RegisteredWorkers();
  for (const FreeWorker& w : registered) {
    if (workers_.at(w.id).Free()) free.push_back(w);
  }
  if (free.empty() && !even_if_none_free && !queue_changed_) return Status::Ok();
  queue_changed_ = false;
  QLORAD_ASSIGN_OR_RETURN(auto queued_records, store_->ListJobs({v1::JOB_STATE_QUEUED}, 0));
  std::map<std::string, JobRecord> queued;
  std::vector<QueuedJob> candidates;
  std::map<std::string, JobMemoryNeed> needs;
  std::map<std::string, JobSpec> specs;
  for (auto& r : queued_records) {
    // Worked out once per job (it may read the model's config.json), and said in its log then.
    auto known = memory_needs_.find(r.job.id());
    JobMemoryNeed need =
        known != memory_needs_.end() ? known->second : GpuMemoryNeedOf(r.job.spec_yaml());
    if (known == memory_needs_.end() && !need.note.empty()) {
      QLORAD_RETURN_IF_ERROR(Log(r.job.id(), "info", need.note, out));
    }
    candidates.push_back({r.job.id(), r.job.priority(), r.job.created_unix_ms(), r.job.gpus(),
                          need.gpu_memory_bytes});
    needs.emplace(r.job.id(), std::move(need));
    auto spec = queued_specs_.extract(r.job.id());
    if (spec.empty()) {
      // Stored specs passed validation at submit; one that no longer parses is the trainer's to
      // refuse, naming the field, so placement leaves its paths unchecked.
      if (auto parsed = ParseJobSpec(r.job.spec_yaml()); parsed.ok()) {
        specs.emplace(r.job.id(), std::move(parsed).value());
      }
    } else {
      specs.insert(std::move(spec));
    }
    if (auto it = specs.find(r.job.id()); it != specs.end()) {
      NoteRefusingWorkers(it->second, r, candidates.back());
    }
    NoteMemoryRefusals(candidates.back());
    queued.emplace(r.job.id(), std::move(r));
  }
  memory_needs_ = std::move(needs);  // only queued jobs: a requeued one is worked out again
  queued_specs_ = std::move(specs);
  SchedulePlan plan =
      PlanScheduleOnWorkers(std::move(candidates), std::move(free), registered, options_.pick_port);
  waiting_reasons_ = std::move(plan.waiting);
  queue_positions_.clear();
  for (size_t i = 0; i < plan.line.size(); ++i) {
    queue_positions_[plan.line[i]] = static_cast<int>(i) + 1;
  }
  const std::vector<Placement>& placements = plan.placements;
  for (const Placement& p : placements) {
    JobRecord& record = queued.at(p.job_id);
    v1::Job& job = record.job;
    job.set_state(v1::JOB_STATE_RUNNING);
    job.set_worker_id(p.worker_ids.front());
    job.set_started_unix_ms(NowUnixMs());
    QLORAD_RETURN_IF_ERROR(store_->UpdateJob(record));
    const int world_size = static_cast<int>(p.worker_ids.size());
    Run& run = runs_[job.id()] = Run{};
    run.rank_workers = p.worker_ids;
    run.exited.assign(p.worker_ids.size(), false);
    for (int rank = 0; rank < world_size; ++rank) {
      WorkerState& worker = workers_.at(p.worker_ids[rank]);
      worker.running.insert({job.id(), job.attempt()});
      v1::Assignment order;
      order.set_kind(v1::Assignment::KIND_START);
      order.set_job_id(job.id());
      order.set_attempt(job.attempt());
      order.set_spec_yaml(job.spec_yaml());
      order.set_rank(rank);
      order.set_world_size(world_size);
      order.set_rendezvous(p.rendezvous);
      order.set_resume_from(record.last_checkpoint);
      SendOrder(worker.id, std::move(order));
      QLORAD_RETURN_IF_ERROR(Log(
          job.id(), "info",
          fmt::format(
              "attempt {} assigned to worker {} ({}) as rank {} of {}{}", job.attempt(),
              worker.name, worker.id, rank, world_size,
              record.last_checkpoint.empty() ? "" : ", resuming from " + record.last_checkpoint),
          out));
    }
  }
  return Status::Ok();
}

void Coordinator::NoteRefusingWorkers(const JobSpec& spec, const JobRecord& record,
                                      QueuedJob& candidate) const {
  for (const auto& [id, w] : workers_) {
    if (!w.roots) continue;  // reported none: it checks the paths itself at start
    auto refused =
        CheckSpecPaths(spec, record.last_checkpoint, *w.roots, PathResolution::kWrittenOnly);
    if (!refused) continue;
    candidate.refused_by.insert(id);
    if (candidate.refusal.empty())
      candidate.refusal = refused->message + " (worker " + w.name + ")";
  }
}

int Coordinator::online_workers() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(workers_.size());
}

std::vector<WorkerView> Coordinator::Workers() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = options_.now();
  std::vector<WorkerView> views;
  for (const auto& [id, w] : workers_) {
    WorkerView view{
        w.id,
        w.name,
        w.hostname,
        w.devices,
        {},
        std::chrono::duration_cast<std::chrono::milliseconds>(now - w.last_heartbeat).count()};
    for (const auto& [job_id, attempt] : w.running) {
      int rank = -1;
      auto run = runs_.find(job_id);
      if (run != runs_.end()) {
        const auto& ranks = run->second.rank_workers;
        auto held = std::find(ranks.begin(), ranks.end(), w.id);
        if (held != ranks.end()) rank = static_cast<int>(held - ranks.begin());
      }
      view.running.push_back({job_id, attempt, rank});
    }
    for (const auto& job_id : w.foreign_jobs) view.running.push_back({job_id, -1, -1});
    views.push_back(std::move(view));
  }
  std::sort(views.begin(), views.end(),
            [](const WorkerView& a, const WorkerView& b) { return a.name < b.name; });
  return views;
}

std::optional<std::string> Coordinator::WorkerName(const std::string& worker_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return std::nullopt;
  return it->second.name;
}

void Coordinator::RecordStep(const v1::Job& job, const std::string& worker_id,
                             const v1::StepMetrics& m) {
  SeriesState& state = series_[job.id()];
  JobSeries& series = state.series;
  series.job_id = job.id();
  series.name = job.name();
  auto previous = series.latest.find(m.rank());
  if (previous != series.latest.end() && previous->second.attempt() == m.attempt() &&
      m.wall_time_s() > previous->second.wall_time_s()) {
    counters_.tokens += m.tokens_per_s() * (m.wall_time_s() - previous->second.wall_time_s());
  }
  series.latest[m.rank()] = m;
  series.attempt = std::max(series.attempt, m.attempt());
  auto worker = workers_.find(worker_id);
  series.workers[m.rank()] = worker == workers_.end() ? worker_id : worker->second.name;
  if (m.rank() == 0) {
    ++counters_.steps;
    if (m.has_eval_loss()) series.last_eval = m;
  }
}

ServiceCounters Coordinator::counters() {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

std::vector<JobSeries> Coordinator::LiveSeries() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = options_.now();
  std::vector<JobSeries> live;
  for (auto it = series_.begin(); it != series_.end();) {
    const auto& finished = it->second.finished_at;
    if (finished && now - *finished > options_.finished_series_ttl) {
      it = series_.erase(it);
      continue;
    }
    live.push_back(it->second.series);
    ++it;
  }
  return live;
}

int Coordinator::busy_workers() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(std::count_if(workers_.begin(), workers_.end(), [](const auto& w) {
    return !w.second.running.empty() || !w.second.foreign_jobs.empty();
  }));
}

}  // namespace qlorad::server
