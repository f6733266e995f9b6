// The coordinator's durable state in one SQLite file (WAL mode): jobs, their step metrics and
// log lines, and the workers seen. Every write is a transaction; a batch of writes can share
// one through Transaction(), so a bad event in a report never leaves half of it stored.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "qlorad/v1/common.pb.h"
#include "server/sqlite_db.h"

namespace qlorad::server {

// A job as stored: the public Job plus what the coordinator needs to resume or stop it.
struct JobRecord {
  v1::Job job;
  std::string last_checkpoint;  // newest checkpoint reported; the next attempt resumes from it
  bool cancel_requested = false;
};

// A stored item and the cursor a stream resumes after (metrics: row id; logs: seq).
template <typename T>
struct Stored {
  int64_t cursor = 0;
  T value;
};

// Where a newest-first listing of jobs stopped: the (created time, id) of the last job listed.
struct JobCursor {
  int64_t created_unix_ms = 0;
  std::string id;
};

struct WorkerRecord {
  std::string id;
  std::string name;
  std::string hostname;
  std::string devices;  // human-readable summary, e.g. "cuda:0 NVIDIA H100 80GB HBM3"
  std::string version;
  int64_t registered_unix_ms = 0;
  bool online = false;
};

// A token as stored (auth.h has what the roles may do). The secret itself is never stored.
struct TokenRecord {
  std::string id;    // "tok-..." : what `qlorad token list` shows and `revoke` takes
  std::string hash;  // TokenHash(secret)
  std::string role;  // user | admin | metrics | enroll | worker
  std::string name;  // the user, or the worker name; empty for enrollment tokens
  int64_t created_unix_ms = 0;
  int64_t revoked_unix_ms = 0;             // 0 while the token is valid
  std::optional<int64_t> expires_unix_ms;  // schema 5; none: never expires

  bool revoked() const { return revoked_unix_ms != 0; }
  bool expired(int64_t now_unix_ms) const {
    return expires_unix_ms && now_unix_ms >= *expires_unix_ms;
  }
  // Neither revoked nor expired at `now_unix_ms`: it lets its holder in.
  bool valid(int64_t now_unix_ms) const { return !revoked() && !expired(now_unix_ms); }
};

class Store {
 public:
  // 2: evaluation during training; 3: restarts; 4: tokens and job owners (issue 19);
  // 5: eval accuracy of classification jobs, token expiry; 6: retries (jobs.retry_of).
  static constexpr int kSchemaVersion = 6;

  static StatusOr<std::unique_ptr<Store>> Open(const std::string& path);

  // Runs body inside one transaction (nested calls join the outer one); rolls back if it fails.
  Status Transaction(const std::function<Status()>& body);

  Status InsertJob(const JobRecord& record);  // ALREADY_EXISTS if the id is taken
  Status UpdateJob(const JobRecord& record);  // NOT_FOUND if the id is unknown
  StatusOr<JobRecord> GetJob(const std::string& id);
  // Newest first. Empty states: every state. limit <= 0: no limit.
  StatusOr<std::vector<JobRecord>> ListJobs(const std::vector<v1::JobState>& states, int limit);
  // The same without the specs (spec_yaml is empty), starting after `after` when given, and
  // only `owner`'s jobs when given: what clients list, so a page costs the same whatever the
  // specs' size.
  StatusOr<std::vector<JobRecord>> ListJobSummaries(
      const std::vector<v1::JobState>& states, int limit, const std::optional<JobCursor>& after,
      const std::optional<std::string>& owner = std::nullopt);
  StatusOr<std::vector<TokenRecord>> SelectTokens(const std::string& where,
                                                  const std::string& value);
  StatusOr<std::map<v1::JobState, int64_t>> CountJobsByState();

  // Returns the row id, the cursor of metric streams.
  StatusOr<int64_t> AppendMetrics(const v1::StepMetrics& metrics);
  // Steps >= from_step with row id > after_cursor, oldest first.
  StatusOr<std::vector<Stored<v1::StepMetrics>>> ReadMetrics(const std::string& job_id,
                                                             int64_t from_step,
                                                             int64_t after_cursor, int limit);
  // (step, loss) of rank 0, oldest first, for the dashboard's chart.
  StatusOr<std::vector<std::pair<int64_t, double>>> ReadLossCurve(const std::string& job_id);
  // The newest metrics row of rank 0 per job, for /metrics.
  StatusOr<std::map<std::string, v1::StepMetrics>> LatestMetricsPerJob();
  // Rank 0's evaluated steps only (eval_loss set): the curve, and the newest one per job.
  StatusOr<std::vector<std::pair<int64_t, double>>> ReadEvalLossCurve(const std::string& job_id);
  StatusOr<std::map<std::string, v1::StepMetrics>> LatestEvalPerJob();

  // Assigns the line the next seq of its job and returns it with that seq.
  StatusOr<v1::LogLine> AppendLog(v1::LogLine line);
  // Lines with seq > after_seq, oldest first.
  StatusOr<std::vector<Stored<v1::LogLine>>> ReadLogs(const std::string& job_id, int64_t after_seq,
                                                      int limit);

  Status UpsertWorker(const WorkerRecord& worker);  // keyed by name: a name re-registers
  Status SetWorkerOnline(const std::string& id, bool online);
  Status MarkAllWorkersOffline();
  StatusOr<std::vector<WorkerRecord>> ListWorkers();

  // Tokens (store_tokens.cc). Read on every call, so a revoke by `qlorad token revoke` (another
  // process on the same file) takes effect at the next call.
  Status InsertToken(const TokenRecord& token);  // ALREADY_EXISTS if the id or hash is taken
  StatusOr<std::optional<TokenRecord>> FindToken(const std::string& hash);
  StatusOr<std::vector<TokenRecord>> ListTokens();  // oldest first, revoked ones included
  // NOT_FOUND naming the id if there is no such token; revoking twice keeps the first time.
  Status RevokeToken(const std::string& id, int64_t now_unix_ms);

 private:
  explicit Store(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  Status Migrate();
  Status PrepareStatements();
  StatusOr<std::vector<JobRecord>> SelectJobs(const char* columns,
                                              const std::vector<v1::JobState>& states, int limit,
                                              const std::optional<JobCursor>& after,
                                              const std::optional<std::string>& owner);
  StatusOr<std::vector<std::pair<int64_t, double>>> ReadCurve(Statement& query,
                                                              const std::string& job_id);
  StatusOr<std::map<std::string, v1::StepMetrics>> LatestPerJob(Statement& query);

  std::recursive_mutex mu_;  // recursive: store methods run inside Transaction bodies
  int transaction_depth_ = 0;
  std::unique_ptr<Database> db_;
  std::unique_ptr<Statement> insert_job_, update_job_, get_job_, count_jobs_;
  std::unique_ptr<Statement> insert_metrics_, read_metrics_, latest_metrics_, loss_curve_;
  std::unique_ptr<Statement> latest_eval_, eval_loss_curve_;
  std::unique_ptr<Statement> next_log_seq_, insert_log_, read_logs_;
  std::unique_ptr<Statement> upsert_worker_, set_worker_online_, list_workers_;
};

bool IsTerminal(v1::JobState state);
// "COMPLETED" for JOB_STATE_COMPLETED.
std::string JobStateName(v1::JobState state);

}  // namespace qlorad::server
