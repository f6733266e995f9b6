// The coordinator's state machine, free of gRPC: jobs move QUEUED -> RUNNING -> COMPLETED /
// FAILED / CANCELLED (or back to QUEUED for a retry), workers register, heartbeat, receive
// orders and report trainer events. The gRPC services are thin adapters over this class.
//
// Attempts are fenced: a job's events count only when they come from the worker holding that
// rank of the job's current attempt. A worker that registers again (after a coordinator restart
// or a lost connection) reports the attempts it runs; the current ones are adopted, the others
// stopped (coordinator_reconcile.cc).
//
// Locking: mu_ guards the in-memory worker and run tables and serializes job-state changes
// with their store writes and hub publishes, so streams see events in commit order. Streams
// read the store without mu_.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/path_sandbox.h"
#include "common/status.h"
#include "qlorad/v1/jobs.pb.h"
#include "qlorad/v1/workers.pb.h"
#include "server/change_feed.h"
#include "server/job_memory.h"
#include "server/job_pages.h"
#include "server/job_validation.h"
#include "server/metrics_hub.h"
#include "server/scheduler.h"
#include "server/store.h"

namespace qlorad::server {

struct CoordinatorOptions {
  std::string db_path = "qlorad.db";
  std::chrono::milliseconds heartbeat_timeout{10000};
  // How often workers are asked to heartbeat; 0: a third of the timeout.
  std::chrono::milliseconds heartbeat_interval{0};
  // How often timeouts are checked and the queue is rescheduled as a safety net.
  std::chrono::milliseconds tick{200};
  // How long a finished job's per-job series stay on /metrics: long enough for a scrape to see
  // its last values, short enough that finished jobs do not pile up.
  std::chrono::milliseconds finished_series_ttl{120000};
  size_t subscriber_queue_capacity = 1024;
  // Longer specs are refused at submit (job_validation.h says why).
  size_t max_spec_bytes = kDefaultMaxSpecBytes;
  PortPicker pick_port = PickLocalFreePort;
  // What heartbeat deadlines are measured on. Tests pass a clock they move by hand, so whether a
  // worker counts as silent follows their steps, not how fast a loaded machine runs them.
  std::function<std::chrono::steady_clock::time_point()> now = std::chrono::steady_clock::now;
};

using MetricsHub = Hub<v1::StepMetrics>;
using LogHub = Hub<v1::LogLine>;

// Counters of what this coordinator did since it started, for /metrics.
struct ServiceCounters {
  int64_t jobs_submitted = 0;
  std::map<v1::JobState, int64_t> jobs_finished;  // COMPLETED, FAILED, CANCELLED
  int64_t attempts_requeued = 0;                  // retries after failures and lost attempts
  int64_t steps = 0;                              // optimizer steps reported (rank 0)
  // Tokens trained, all ranks: each step's tokens/s times the time since the rank's previous
  // step of the same attempt. An estimate (trainers report a rate, not a count): evaluations
  // and checkpoints between two steps count as training time, and an attempt's first step,
  // whose start is unknown, is left out.
  double tokens = 0;
};

// The live series of one job for /metrics: the newest step of each rank and the worker that
// runs it. Kept while the job runs and for finished_series_ttl after it ends.
struct JobSeries {
  std::string job_id;
  std::string name;
  std::map<int, v1::StepMetrics> latest;     // by rank
  std::map<int, std::string> workers;        // worker name by rank
  std::optional<v1::StepMetrics> last_eval;  // rank 0's newest evaluated step
  int attempt = 0;  // the newest attempt that reported a step: the job's restarts so far
};

// A registered worker as the dashboard shows it.
struct WorkerView {
  struct RunningRank {
    std::string job_id;
    int attempt = 0;
    int rank = -1;  // -1: a trainer it runs that is not its to run (being stopped)
  };
  std::string id;
  std::string name;
  std::string hostname;
  std::vector<v1::DeviceInfo> devices;
  std::vector<RunningRank> running;
  int64_t heartbeat_age_ms = 0;  // since its last heartbeat or report
};

class Coordinator {
 public:
  // Opens the store; jobs a previous coordinator left RUNNING wait up to the heartbeat timeout
  // for their workers to report them (adopted), and are requeued after it.
  static StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options);
  ~Coordinator();

  // Starts the timeout/scheduling thread. Stop() ends it and wakes every stream.
  void Start();
  void Stop();
  bool stopped() const;

  // JobService.
  // `owner`: the submitting user (auth.h), who alone (with admins) may see the job.
  StatusOr<v1::Job> SubmitJob(const std::string& spec_yaml, const std::string& owner);
  StatusOr<v1::Job> GetJob(const std::string& job_id);
  // A page of jobs newest first, without specs (job_pages.h has the sizes and the token); only
  // `owner`'s jobs when given.
  StatusOr<JobPage> ListJobs(const std::vector<v1::JobState>& states, int page_size,
                             const std::string& page_token,
                             const std::optional<std::string>& owner = std::nullopt);
  StatusOr<v1::Job> CancelJob(const std::string& job_id);
  // A new job with a FAILED or CANCELLED job's spec, owner and priority (Job.retry_of names it),
  // resuming from its last checkpoint unless `from_scratch`; FAILED_PRECONDITION naming the state
  // otherwise. `by` (who asked) goes into the new job's log.
  StatusOr<v1::Job> RetryJob(const std::string& job_id, bool from_scratch, const std::string& by);

  // WorkerService.
  // Replaces entries of the same name; adopts or stops the attempts the worker reports.
  StatusOr<v1::RegisterResponse> RegisterWorker(const v1::RegisterRequest& request);
  // Refreshes the worker's deadline and reconciles the jobs it says it runs; false if unknown.
  bool Heartbeat(const v1::HeartbeatRequest& request);
  // An Assignments stream attaches; returns its generation (a newer stream replaces older ones).
  StatusOr<uint64_t> AttachOrders(const std::string& worker_id);
  void DetachOrders(const std::string& worker_id, uint64_t generation);
  // The next order for this stream without removing it; nullopt after `timeout` with nothing.
  // NOT_FOUND / CANCELLED when the worker is gone or the stream was replaced.
  StatusOr<std::optional<v1::Assignment>> PeekOrder(const std::string& worker_id,
                                                    uint64_t generation,
                                                    std::chrono::milliseconds timeout);
  // The order PeekOrder returned was written to the stream.
  void PopOrder(const std::string& worker_id, uint64_t generation);
  Status ReportEvents(const v1::ReportEventsRequest& request);

  // Drops workers silent past the heartbeat timeout, requeues attempts no worker claimed after a
  // restart, and schedules the queue. Runs on the tick
  // thread; public so tests can drive it.
  void Tick();

  Store& store() { return *store_; }
  MetricsHub& metrics_hub() { return metrics_hub_; }
  LogHub& log_hub() { return log_hub_; }
  int online_workers();
  int busy_workers();
  // The workers registered now, by name.
  std::vector<WorkerView> Workers();
  // The name a registered worker id is registered under; nullopt for an unknown id.
  std::optional<std::string> WorkerName(const std::string& worker_id);
  ServiceCounters counters();
  // Jobs running, or finished less than finished_series_ttl ago (older ones are dropped here).
  std::vector<JobSeries> LiveSeries();
  // Bumped after every published change and every heartbeat (change_feed.h).
  ChangeFeed& changes() { return changes_; }

 private:
  using Clock = std::chrono::steady_clock;

  struct WorkerState {
    std::string id;
    std::string name;
    std::string hostname;
    std::vector<v1::DeviceInfo> devices;
    std::optional<PathRoots> roots;  // where its specs' paths may point; unset: not reported
    Clock::time_point last_heartbeat;
    int64_t gpu_memory_bytes = -1;  // its GPU's total memory; -1: a CPU worker
    // Its GPU's free memory, measured while it ran no trainer (Register, heartbeats); -1: not
    // known (a CPU, a worker older than the field, a failed probe): placement goes by the total.
    int64_t gpu_free_bytes = -1;
    int rendezvous_port = 0;  // the port it holds for rank 0's store; 0: not reported
    uint64_t generation = 0;  // of the attached Assignments stream; 0: none attached
    std::deque<v1::Assignment> outbox;
    // (job id, attempt) it was told to start and has not reported the exit of.
    std::set<std::pair<std::string, int>> running;
    // Jobs it runs that are not its to run (a trainer left over from before a coordinator
    // restart, or an attempt that is no longer current): they get a CANCEL, and the worker takes
    // no new job until a heartbeat no longer lists them or their exit is reported.
    std::set<std::string> foreign_jobs;

    bool Free() const { return generation != 0 && running.empty() && foreign_jobs.empty(); }
    bool Runs(const std::string& job_id) const;
  };

  // The live attempt of a RUNNING job.
  struct Run {
    std::vector<std::string> rank_workers;  // "": not claimed yet by a worker (after a restart)
    std::vector<bool> exited;
    bool done = false;
    std::string error_message;  // from the trainer's `error` event
    std::string error_field;
    // Set while ranks are unclaimed: past it, the attempt counts as lost.
    std::optional<Clock::time_point> adopt_by;

    // A rank some worker holds and has not reported the exit of.
    bool HasLiveRank() const;
  };

  // What a report changed, published to the hubs once its transaction committed.
  struct Published {
    std::vector<Stored<v1::StepMetrics>> metrics;
    std::vector<v1::LogLine> logs;
    std::vector<std::string> finished_jobs;
  };

  struct SeriesState {
    JobSeries series;
    std::optional<Clock::time_point> finished_at;
  };

  Coordinator(CoordinatorOptions options, std::unique_ptr<Store> store);
  // Stores a new QUEUED job (its paths checked against the workers' roots), logs `note` as its
  // first line and schedules.
  StatusOr<v1::Job> Enqueue(JobRecord record, const JobSpec& spec, const std::string& note);
  // With mu_ held: a step of `rank` reached the store; updates the series and the counters.
  void RecordStep(const v1::Job& job, const std::string& worker_id, const v1::StepMetrics& m);
  // coordinator_reconcile.cc: after a restart, each RUNNING job waits for its workers.
  Status RecoverJobsLeftRunning();

  // All of these run with mu_ held and inside a store transaction.
  Status Log(const std::string& job_id, const std::string& level, const std::string& message,
             Published& out);
  Status ApplyEvent(const std::string& worker_id, const v1::TrainerEvent& event, Published& out);
  Status ApplyExit(JobRecord& record, Run& run, int rank, const v1::TrainerEvent::Exit& exit,
                   Published& out);
  // The trainer failed: queue the next attempt (resuming from the last checkpoint) while
  // restarts remain and the failure is retryable, else FAILED with reason + stderr tail.
  Status RetryOrFail(JobRecord& record, const std::string& reason, bool retryable,
                     const std::string& stderr_tail, Published& out);
  // coordinator_memory.cc: the trainer of `rank` refused the job for GPU memory, its estimate
  // peaking at `peak`: queued again without spending a restart, the refusing worker left out and
  // the need raised to the trainer's, while registered workers could take it; else FAILED with
  // `reason`. Each worker refuses a job at most once, so this cannot loop.
  Status MoveOrFailRefused(JobRecord& record, const Run& run, int rank, int64_t peak,
                           const std::string& reason, const std::string& stderr_tail,
                           Published& out);
  // Every registered worker, free or busy, as the scheduler sees it.
  std::vector<FreeWorker> RegisteredWorkers() const;
  // The workers whose trainer refused the job for memory, and the need the trainers said, into
  // `candidate`.
  void NoteMemoryRefusals(QueuedJob& candidate) const;
  // The attempt was lost through no fault of the trainer (its worker vanished or stopped it):
  // queued again without spending a restart, or CANCELLED when a cancel was pending.
  Status AttemptLost(JobRecord& record, const std::string& reason, Published& out);
  // Ends the attempt and queues the next one; `what` says how the attempt ended.
  Status Requeue(JobRecord& record, const std::string& what, Published& out);
  // coordinator_reconcile.cc: one attempt a registering worker reports. Adopted when it is the
  // job's current attempt and its rank is unclaimed or held by `replaced` (earlier entries of
  // the same worker name); else the worker is told to stop it.
  Status AdoptOrStop(const std::string& worker_id, const std::vector<std::string>& replaced,
                     const v1::RunningAttempt& attempt, v1::RegisterResponse& response,
                     Published& out);
  // Attempts still unclaimed past their adopt_by are lost.
  Status ExpireUnclaimedRuns(Published& out);
  Status Finish(JobRecord& record, v1::JobState state, const std::string& error, Published& out);
  // The attempt is over: ranks still running get CANCEL for it; their exits only free workers.
  void EndRun(const std::string& job_id, int attempt);
  // CANCEL orders for the ranks of the attempt that have not exited yet.
  void SendCancels(const std::string& job_id, int attempt, const Run& run);
  void SendOrder(const std::string& worker_id, v1::Assignment order);
  static v1::Assignment CancelOrder(const std::string& job_id, int attempt, int rank);
  Status DropWorker(const std::string& worker_id, const std::string& why, Published& out);
  // The registered workers whose roots refuse the job's paths (its spec and the checkpoint it
  // resumes from), and the first refusal's message, into `candidate`.
  void NoteRefusingWorkers(const JobSpec& spec, const JobRecord& record,
                           QueuedJob& candidate) const;
  // Plans the queue onto the free workers. With no free worker it returns at once, unless
  // even_if_none_free (a submit: the job may fit no registered worker, which it should hear now).
  Status Schedule(Published& out, bool even_if_none_free = false);
  // The job's waiting_reason and place in line, while it is queued.
  void FillQueuedFields(v1::Job& job) const;
  void PublishLocked(const Published& out);
  // Runs body in one transaction and publishes what it produced once committed.
  Status Mutate(const std::function<Status(Published&)>& body);

  const CoordinatorOptions options_;
  std::unique_ptr<Store> store_;
  MetricsHub metrics_hub_;
  LogHub log_hub_;
  ChangeFeed changes_;

  mutable std::mutex mu_;
  std::condition_variable orders_cv_;
  std::condition_variable tick_cv_;
  bool stopped_ = false;
  uint64_t next_generation_ = 1;
  // The newest job's created_unix_ms: each job's is later than the one before, so that jobs of one
  // priority go in submit order also when several arrive within a millisecond (the scheduler
  // orders by priority, created_unix_ms, then the random id).
  int64_t last_created_unix_ms_ = 0;
  std::map<std::string, WorkerState> workers_;  // by id
  std::map<std::string, Run> runs_;             // by job id
  // The GPU memory each queued job needs (job_memory.h), worked out once per job, and why the
  // scheduler left a job queued (Job.waiting_reason), as of its last plan.
  std::map<std::string, JobMemoryNeed> memory_needs_;
  // Each queued job's parsed spec, kept while it is queued: placement checks its paths against
  // every worker's roots at each plan (the workers change; the spec does not).
  std::map<std::string, JobSpec> queued_specs_;
  std::map<std::string, std::string> waiting_reasons_;
  // Jobs a trainer refused for GPU memory (MoveOrFailRefused), by job id, until they finish. In
  // memory only: after a coordinator restart the next refusal is heard afresh. Workers by name,
  // not id: one that registers again keeps its refusal.
  struct MemoryRefusal {
    int64_t gpu_memory_bytes = 0;  // DeviceBytesNeeded of the largest peak a trainer refused
    std::set<std::string> worker_names;
  };
  std::map<std::string, MemoryRefusal> memory_refusals_;
  // Each queued job's place in line (1: the next to start), as of the last plan.
  std::map<std::string, int> queue_positions_;
  // Set when the queue or the workers changed other than by a plan (a requeue, a finished or
  // cancelled job, a worker registered or dropped): the next Schedule plans even with no free
  // worker, so that the places in line are current.
  bool queue_changed_ = true;
  ServiceCounters counters_;
  std::map<std::string, SeriesState> series_;  // by job id
  std::thread tick_thread_;
};

int64_t NowUnixMs();

}  // namespace qlorad::server
