#include "server/store.h"

namespace qlorad::server {
namespace {

// Version 4's tables and index (with version 5's expires_at), run after the upgrades (the index
// needs the owner column, which an older file gets from them) on new and old files alike.
// Tokens are stored as the SHA-256 of the secret (auth_token.h), never the secret itself.
// expires_at: unix milliseconds, NULL for a token that never expires.
constexpr const char* kTokensSchema = R"sql(
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_unix_ms);
CREATE TABLE IF NOT EXISTS tokens (
  id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL, name TEXT NOT NULL,
  created_unix_ms INTEGER NOT NULL, revoked_unix_ms INTEGER NOT NULL DEFAULT 0,
  expires_at INTEGER);
)sql";

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, state INTEGER NOT NULL, spec_yaml TEXT NOT NULL,
  priority INTEGER NOT NULL, attempt INTEGER NOT NULL, max_restarts INTEGER NOT NULL,
  worker_id TEXT NOT NULL, created_unix_ms INTEGER NOT NULL, started_unix_ms INTEGER NOT NULL,
  finished_unix_ms INTEGER NOT NULL, last_step INTEGER NOT NULL, total_steps INTEGER NOT NULL,
  last_loss REAL NOT NULL, error TEXT NOT NULL, adapter_path TEXT NOT NULL, gpus INTEGER NOT NULL,
  last_checkpoint TEXT NOT NULL, cancel_requested INTEGER NOT NULL,
  best_step INTEGER NOT NULL DEFAULT 0, best_eval_loss REAL NOT NULL DEFAULT 0,
  best_checkpoint_path TEXT NOT NULL DEFAULT '', best_adapter_path TEXT NOT NULL DEFAULT '',
  stopped_early INTEGER NOT NULL DEFAULT 0, restarts INTEGER NOT NULL DEFAULT 0,
  owner TEXT NOT NULL DEFAULT '', retry_of TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_unix_ms);
CREATE TABLE IF NOT EXISTS metrics (
  id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL REFERENCES jobs (id),
  attempt INTEGER NOT NULL, rank INTEGER NOT NULL, step INTEGER NOT NULL,
  total_steps INTEGER NOT NULL, loss REAL NOT NULL, lr REAL NOT NULL, grad_norm REAL NOT NULL,
  tokens_per_s REAL NOT NULL, vram_allocated_bytes INTEGER NOT NULL,
  vram_reserved_bytes INTEGER NOT NULL, vram_peak_bytes INTEGER NOT NULL,
  wall_time_s REAL NOT NULL, eval_loss REAL, eval_perplexity REAL, eval_accuracy REAL);
CREATE INDEX IF NOT EXISTS metrics_by_job ON metrics (job_id, id);
CREATE TABLE IF NOT EXISTS logs (
  job_id TEXT NOT NULL REFERENCES jobs (id), seq INTEGER NOT NULL, level TEXT NOT NULL,
  message TEXT NOT NULL, source TEXT NOT NULL, unix_ms INTEGER NOT NULL, rank INTEGER NOT NULL,
  PRIMARY KEY (job_id, seq));
CREATE TABLE IF NOT EXISTS workers (
  name TEXT PRIMARY KEY, id TEXT NOT NULL, hostname TEXT NOT NULL, devices TEXT NOT NULL,
  version TEXT NOT NULL, registered_unix_ms INTEGER NOT NULL, online INTEGER NOT NULL);
)sql";

// Column order shared by every job statement: binds use ?1..?27 in this order.
constexpr const char* kJobColumns =
    "id, name, state, spec_yaml, priority, attempt, max_restarts, worker_id, created_unix_ms, "
    "started_unix_ms, finished_unix_ms, last_step, total_steps, last_loss, error, adapter_path, "
    "gpus, last_checkpoint, cancel_requested, best_step, best_eval_loss, best_checkpoint_path, "
    "best_adapter_path, stopped_early, restarts, owner, retry_of";

// What each schema version adds to the one before; a store opened at version v runs the steps
// after v. (Version 1 is kSchema as first released; kSchema has every column for a new store.)
constexpr const char* kUpgrades[] = {
    // 1 -> 2: evaluation during training. NULL eval columns: a step that was not evaluated.
    R"sql(
ALTER TABLE jobs ADD COLUMN best_step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN best_eval_loss REAL NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN best_checkpoint_path TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN best_adapter_path TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN stopped_early INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics ADD COLUMN eval_loss REAL;
ALTER TABLE metrics ADD COLUMN eval_perplexity REAL;
)sql",
    // 2 -> 3: restarts spent (trainer failures only), apart from the attempt number.
    "ALTER TABLE jobs ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0;",
    // 3 -> 4: authentication (issue 19). Jobs stored before have no owner: admins only.
    "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';",
    // 4 -> 5: task classification's eval accuracy (NULL: not evaluated, or not classification),
    // and token expiry (NULL: never). A file older than 4 has no tokens table yet (kTokensSchema
    // makes it after the upgrades), so this step makes version 4's before adding the column.
    R"sql(
ALTER TABLE metrics ADD COLUMN eval_accuracy REAL;
CREATE TABLE IF NOT EXISTS tokens (
  id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL, name TEXT NOT NULL,
  created_unix_ms INTEGER NOT NULL, revoked_unix_ms INTEGER NOT NULL DEFAULT 0);
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
)sql",
    // 5 -> 6: retries (JobService.RetryJob). Jobs stored before retry nothing.
    "ALTER TABLE jobs ADD COLUMN retry_of TEXT NOT NULL DEFAULT '';",
};

// kJobColumns with the spec read as '': listings leave specs out without a second row reader.
// Derived, so a column added to kJobColumns cannot be missing here.
const char* JobSummaryColumns() {
  static const std::string columns = [] {
    std::string c = kJobColumns;
    const std::string spec = "spec_yaml";
    c.replace(c.find(spec), spec.size(), "'' AS spec_yaml");
    return c;
  }();
  return columns.c_str();
}

constexpr const char* kMetricsColumns =
    "id, job_id, attempt, rank, step, total_steps, loss, lr, grad_norm, tokens_per_s, "
    "vram_allocated_bytes, vram_reserved_bytes, vram_peak_bytes, wall_time_s, eval_loss, "
    "eval_perplexity, eval_accuracy";

constexpr const char* kLogColumns = "job_id, seq, level, message, source, unix_ms, rank";

void BindJob(Statement& s, const JobRecord& r) {
  const v1::Job& j = r.job;
  s.Bind(1, j.id()).Bind(2, j.name()).Bind(3, static_cast<int>(j.state())).Bind(4, j.spec_yaml());
  s.Bind(5, j.priority()).Bind(6, j.attempt()).Bind(7, j.max_restarts()).Bind(8, j.worker_id());
  s.Bind(9, j.created_unix_ms()).Bind(10, j.started_unix_ms()).Bind(11, j.finished_unix_ms());
  s.Bind(12, j.last_step()).Bind(13, j.total_steps()).Bind(14, j.last_loss()).Bind(15, j.error());
  s.Bind(16, j.adapter_path()).Bind(17, j.gpus()).Bind(18, r.last_checkpoint);
  s.Bind(19, r.cancel_requested ? 1 : 0);
  s.Bind(20, j.best().step()).Bind(21, j.best().eval_loss());
  s.Bind(22, j.best().checkpoint_path()).Bind(23, j.best().adapter_path());
  s.Bind(24, j.stopped_early() ? 1 : 0).Bind(25, j.restarts()).Bind(26, j.owner());
  s.Bind(27, j.retry_of());
}

JobRecord ReadJob(const Statement& s) {
  JobRecord r;
  v1::Job& j = r.job;
  j.set_id(s.Text(0));
  j.set_name(s.Text(1));
  j.set_state(static_cast<v1::JobState>(s.Int(2)));
  j.set_spec_yaml(s.Text(3));
  j.set_priority(static_cast<int32_t>(s.Int(4)));
  j.set_attempt(static_cast<int32_t>(s.Int(5)));
  j.set_max_restarts(static_cast<int32_t>(s.Int(6)));
  j.set_worker_id(s.Text(7));
  j.set_created_unix_ms(s.Int(8));
  j.set_started_unix_ms(s.Int(9));
  j.set_finished_unix_ms(s.Int(10));
  j.set_last_step(s.Int(11));
  j.set_total_steps(s.Int(12));
  j.set_last_loss(s.Double(13));
  j.set_error(s.Text(14));
  j.set_adapter_path(s.Text(15));
  j.set_gpus(static_cast<int32_t>(s.Int(16)));
  r.last_checkpoint = s.Text(17);
  r.cancel_requested = s.Int(18) != 0;
  if (s.Int(19) > 0) {  // step 0 is never evaluated: no best yet
    j.mutable_best()->set_step(s.Int(19));
    j.mutable_best()->set_eval_loss(s.Double(20));
    j.mutable_best()->set_checkpoint_path(s.Text(21));
    j.mutable_best()->set_adapter_path(s.Text(22));
  }
  j.set_stopped_early(s.Int(23) != 0);
  j.set_restarts(static_cast<int32_t>(s.Int(24)));
  j.set_owner(s.Text(25));
  j.set_retry_of(s.Text(26));
  return r;
}

Stored<v1::StepMetrics> ReadMetricsRow(const Statement& s) {
  Stored<v1::StepMetrics> row;
  row.cursor = s.Int(0);
  v1::StepMetrics& m = row.value;
  m.set_job_id(s.Text(1));
  m.set_attempt(static_cast<int32_t>(s.Int(2)));
  m.set_rank(static_cast<int32_t>(s.Int(3)));
  m.set_step(s.Int(4));
  m.set_total_steps(s.Int(5));
  m.set_loss(s.Double(6));
  m.set_lr(s.Double(7));
  m.set_grad_norm(s.Double(8));
  m.set_tokens_per_s(s.Double(9));
  m.set_vram_allocated_bytes(s.Int(10));
  m.set_vram_reserved_bytes(s.Int(11));
  m.set_vram_peak_bytes(s.Int(12));
  m.set_wall_time_s(s.Double(13));
  if (!s.IsNull(14)) m.set_eval_loss(s.Double(14));
  if (!s.IsNull(15)) m.set_eval_perplexity(s.Double(15));
  if (!s.IsNull(16)) m.set_eval_accuracy(s.Double(16));
  return row;
}

v1::LogLine ReadLogRow(const Statement& s) {
  v1::LogLine line;
  line.set_job_id(s.Text(0));
  line.set_seq(s.Int(1));
  line.set_level(s.Text(2));
  line.set_message(s.Text(3));
  line.set_source(s.Text(4));
  line.set_unix_ms(s.Int(5));
  line.set_rank(static_cast<int32_t>(s.Int(6)));
  return line;
}

WorkerRecord ReadWorkerRow(const Statement& s) {
  WorkerRecord w;
  w.name = s.Text(0);
  w.id = s.Text(1);
  w.hostname = s.Text(2);
  w.devices = s.Text(3);
  w.version = s.Text(4);
  w.registered_unix_ms = s.Int(5);
  w.online = s.Int(6) != 0;
  return w;
}

}  // namespace

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_COMPLETED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

std::string JobStateName(v1::JobState state) {
  const std::string name = v1::JobState_Name(state);
  const std::string prefix = "JOB_STATE_";
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  QLORAD_ASSIGN_OR_RETURN(auto db, Database::Open(path));
  std::unique_ptr<Store> store(new Store(std::move(db)));
  // WAL: stream readers never block the writer; synchronous=NORMAL is durable across process
  // crashes (the case that matters for a coordinator restart).
  QLORAD_RETURN_IF_ERROR(store->db_->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"));
  QLORAD_RETURN_IF_ERROR(store->db_->Exec("PRAGMA foreign_keys=ON;"));
  QLORAD_RETURN_IF_ERROR(store->Migrate());
  QLORAD_RETURN_IF_ERROR(store->PrepareStatements());
  return store;
}

Status Store::Migrate() {
  return Transaction([&]() -> Status {
    // A new file (version 0) gets the whole schema at once; an older one keeps its tables
    // (CREATE IF NOT EXISTS) and takes the upgrades it lacks.
    QLORAD_RETURN_IF_ERROR(db_->Exec(kSchema));
    QLORAD_ASSIGN_OR_RETURN(auto get, db_->Prepare("SELECT MAX(version) FROM schema_version"));
    QLORAD_ASSIGN_OR_RETURN(bool has_row, get->Step());
    const int64_t version = has_row ? get->Int(0) : 0;
    get.reset();  // its read would keep the schema locked for the ALTERs below
    if (version > kSchemaVersion) {
      return FailedPrecondition(db_->path() + ": schema version " + std::to_string(version) +
                                " is newer than this qlorad understands (" +
                                std::to_string(kSchemaVersion) + ")");
    }
    if (version == kSchemaVersion) return Status::Ok();
    for (int64_t v = version; v > 0 && v < kSchemaVersion; ++v) {
      QLORAD_RETURN_IF_ERROR(db_->Exec(kUpgrades[v - 1]));
    }
    QLORAD_RETURN_IF_ERROR(db_->Exec(kTokensSchema));
    QLORAD_ASSIGN_OR_RETURN(auto set, db_->Prepare("INSERT INTO schema_version VALUES (?1)"));
    return set->Bind(1, kSchemaVersion).Run();
  });
}

Status Store::PrepareStatements() {
  const std::string jobs = kJobColumns;
  const std::string metrics = kMetricsColumns;
  const std::string logs = kLogColumns;
  QLORAD_ASSIGN_OR_RETURN(
      insert_job_,
      db_->Prepare(
          "INSERT INTO jobs (" + jobs +
          ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,"
          "?21,?22,?23,?24,?25,?26,?27)"));
  QLORAD_ASSIGN_OR_RETURN(
      update_job_,
      db_->Prepare(
          "UPDATE jobs SET name=?2, state=?3, spec_yaml=?4, priority=?5, attempt=?6, "
          "max_restarts=?7, worker_id=?8, created_unix_ms=?9, started_unix_ms=?10, "
          "finished_unix_ms=?11, last_step=?12, total_steps=?13, last_loss=?14, "
          "error=?15, adapter_path=?16, gpus=?17, last_checkpoint=?18, "
          "cancel_requested=?19, best_step=?20, best_eval_loss=?21, "
          "best_checkpoint_path=?22, best_adapter_path=?23, stopped_early=?24, restarts=?25, "
          "owner=?26, retry_of=?27 WHERE id=?1"));
  QLORAD_ASSIGN_OR_RETURN(get_job_, db_->Prepare("SELECT " + jobs + " FROM jobs WHERE id=?1"));
  QLORAD_ASSIGN_OR_RETURN(count_jobs_,
                          db_->Prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state"));
  QLORAD_ASSIGN_OR_RETURN(insert_metrics_,
                          db_->Prepare("INSERT INTO metrics (" + metrics.substr(4) +
                                       ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,"
                                       "?14,?15,?16)"));
  QLORAD_ASSIGN_OR_RETURN(read_metrics_,
                          db_->Prepare("SELECT " + metrics +
                                       " FROM metrics WHERE job_id=?1 AND step>=?2 AND id>?3 "
                                       "ORDER BY id LIMIT ?4"));
  QLORAD_ASSIGN_OR_RETURN(
      latest_metrics_,
      db_->Prepare("SELECT " + metrics +
                   " FROM metrics WHERE id IN (SELECT MAX(id) FROM metrics WHERE rank=0 "
                   "GROUP BY job_id)"));
  QLORAD_ASSIGN_OR_RETURN(
      loss_curve_,
      db_->Prepare("SELECT step, loss FROM metrics WHERE job_id=?1 AND rank=0 ORDER BY id"));
  QLORAD_ASSIGN_OR_RETURN(
      latest_eval_,
      db_->Prepare("SELECT " + metrics +
                   " FROM metrics WHERE id IN (SELECT MAX(id) FROM metrics WHERE rank=0 AND "
                   "eval_loss IS NOT NULL GROUP BY job_id)"));
  QLORAD_ASSIGN_OR_RETURN(eval_loss_curve_,
                          db_->Prepare("SELECT step, eval_loss FROM metrics WHERE job_id=?1 AND "
                                       "rank=0 AND eval_loss IS NOT NULL ORDER BY id"));
  QLORAD_ASSIGN_OR_RETURN(
      next_log_seq_, db_->Prepare("SELECT COALESCE(MAX(seq), 0) + 1 FROM logs WHERE job_id=?1"));
  QLORAD_ASSIGN_OR_RETURN(
      insert_log_, db_->Prepare("INSERT INTO logs (" + logs + ") VALUES (?1,?2,?3,?4,?5,?6,?7)"));
  QLORAD_ASSIGN_OR_RETURN(read_logs_, db_->Prepare("SELECT " + logs +
                                                   " FROM logs WHERE job_id=?1 AND seq>?2 "
                                                   "ORDER BY seq LIMIT ?3"));
  QLORAD_ASSIGN_OR_RETURN(
      upsert_worker_,
      db_->Prepare("INSERT INTO workers (name, id, hostname, devices, version, registered_unix_ms, "
                   "online) VALUES (?1,?2,?3,?4,?5,?6,?7) ON CONFLICT (name) DO UPDATE SET "
                   "id=?2, hostname=?3, devices=?4, version=?5, registered_unix_ms=?6, online=?7"));
  QLORAD_ASSIGN_OR_RETURN(set_worker_online_,
                          db_->Prepare("UPDATE workers SET online=?2 WHERE id=?1"));
  QLORAD_ASSIGN_OR_RETURN(
      list_workers_,
      db_->Prepare("SELECT name, id, hostname, devices, version, registered_unix_ms, online "
                   "FROM workers ORDER BY name"));
  return Status::Ok();
}

Status Store::Transaction(const std::function<Status()>& body) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (transaction_depth_ == 0) QLORAD_RETURN_IF_ERROR(db_->Exec("BEGIN IMMEDIATE"));
  ++transaction_depth_;
  Status status = body();
  --transaction_depth_;
  if (transaction_depth_ > 0) return status;
  if (status.ok()) {
    status = db_->Exec("COMMIT");
    if (status.ok()) return status;
  }
  Status rollback = db_->Exec("ROLLBACK");
  (void)rollback;  // the body's error is the one worth reporting
  return status;
}

Status Store::InsertJob(const JobRecord& record) {
  return Transaction([&]() -> Status {
    StatementScope get(*get_job_);
    get->Bind(1, record.job.id());
    QLORAD_ASSIGN_OR_RETURN(bool exists, get->Step());
    if (exists) return {StatusCode::kAlreadyExists, "job " + record.job.id() + " already exists"};
    BindJob(*insert_job_, record);
    return insert_job_->Run();
  });
}

Status Store::UpdateJob(const JobRecord& record) {
  return Transaction([&]() -> Status {
    BindJob(*update_job_, record);
    QLORAD_RETURN_IF_ERROR(update_job_->Run());
    if (db_->Changes() == 0) return NotFound("job " + record.job.id() + " not found");
    return Status::Ok();
  });
}

StatusOr<JobRecord> Store::GetJob(const std::string& id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  get_job_->Bind(1, id);
  QLORAD_ASSIGN_OR_RETURN(auto rows, CollectRows<JobRecord>(*get_job_, ReadJob));
  if (rows.empty()) return NotFound("job " + id + " not found");
  return std::move(rows.front());
}

StatusOr<std::vector<JobRecord>> Store::ListJobs(const std::vector<v1::JobState>& states,
                                                 int limit) {
  return SelectJobs(kJobColumns, states, limit, std::nullopt, std::nullopt);
}

StatusOr<std::vector<JobRecord>> Store::ListJobSummaries(const std::vector<v1::JobState>& states,
                                                         int limit,
                                                         const std::optional<JobCursor>& after,
                                                         const std::optional<std::string>& owner) {
  return SelectJobs(JobSummaryColumns(), states, limit, after, owner);
}

StatusOr<std::vector<JobRecord>> Store::SelectJobs(const char* columns,
                                                   const std::vector<v1::JobState>& states,
                                                   int limit, const std::optional<JobCursor>& after,
                                                   const std::optional<std::string>& owner) {
  // Parameters: ?1..?n the states, then the cursor's two values, then the owner, then the limit.
  std::string sql = std::string("SELECT ") + columns + " FROM jobs WHERE 1";
  int next = 1;
  if (!states.empty()) {
    sql += " AND state IN (";
    for (size_t i = 0; i < states.size(); ++i) sql += (i ? ",?" : "?") + std::to_string(next++);
    sql += ")";
  }
  if (after) {
    // The order below is (created_unix_ms, id) descending, so "after" is "smaller".
    sql += " AND (created_unix_ms, id) < (?" + std::to_string(next) + ", ?" +
           std::to_string(next + 1) + ")";
    next += 2;
  }
  if (owner) sql += " AND owner = ?" + std::to_string(next++);
  sql += " ORDER BY created_unix_ms DESC, id DESC LIMIT ?" + std::to_string(next);
  std::lock_guard<std::recursive_mutex> lock(mu_);
  QLORAD_ASSIGN_OR_RETURN(auto stmt, db_->Prepare(sql));
  int param = 1;
  for (v1::JobState state : states) stmt->Bind(param++, static_cast<int>(state));
  if (after) {
    stmt->Bind(param++, after->created_unix_ms);
    stmt->Bind(param++, after->id);
  }
  if (owner) stmt->Bind(param++, *owner);
  stmt->Bind(param, static_cast<int64_t>(limit > 0 ? limit : -1));
  return CollectRows<JobRecord>(*stmt, ReadJob);
}

StatusOr<std::map<v1::JobState, int64_t>> Store::CountJobsByState() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  using Count = std::pair<v1::JobState, int64_t>;
  QLORAD_ASSIGN_OR_RETURN(auto rows, CollectRows<Count>(*count_jobs_, [](const Statement& s) {
                            return Count{static_cast<v1::JobState>(s.Int(0)), s.Int(1)};
                          }));
  return std::map<v1::JobState, int64_t>(rows.begin(), rows.end());
}

StatusOr<int64_t> Store::AppendMetrics(const v1::StepMetrics& m) {
  int64_t row_id = 0;
  Status written = Transaction([&]() -> Status {
    Statement& s = *insert_metrics_;
    s.Bind(1, m.job_id()).Bind(2, m.attempt()).Bind(3, m.rank()).Bind(4, m.step());
    s.Bind(5, m.total_steps()).Bind(6, m.loss()).Bind(7, m.lr()).Bind(8, m.grad_norm());
    s.Bind(9, m.tokens_per_s()).Bind(10, m.vram_allocated_bytes());
    s.Bind(11, m.vram_reserved_bytes()).Bind(12, m.vram_peak_bytes()).Bind(13, m.wall_time_s());
    s.Bind(14, m.has_eval_loss() ? std::optional(m.eval_loss()) : std::nullopt);
    s.Bind(15, m.has_eval_perplexity() ? std::optional(m.eval_perplexity()) : std::nullopt);
    s.Bind(16, m.has_eval_accuracy() ? std::optional(m.eval_accuracy()) : std::nullopt);
    QLORAD_RETURN_IF_ERROR(s.Run());
    row_id = db_->LastInsertRowId();
    return Status::Ok();
  });
  if (!written.ok()) return written;
  return row_id;
}

StatusOr<std::vector<Stored<v1::StepMetrics>>> Store::ReadMetrics(const std::string& job_id,
                                                                  int64_t from_step,
                                                                  int64_t after_cursor, int limit) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  read_metrics_->Bind(1, job_id).Bind(2, from_step).Bind(3, after_cursor).Bind(4, limit);
  return CollectRows<Stored<v1::StepMetrics>>(*read_metrics_, ReadMetricsRow);
}

StatusOr<std::vector<std::pair<int64_t, double>>> Store::ReadLossCurve(const std::string& job_id) {
  return ReadCurve(*loss_curve_, job_id);
}

StatusOr<std::vector<std::pair<int64_t, double>>> Store::ReadEvalLossCurve(
    const std::string& job_id) {
  return ReadCurve(*eval_loss_curve_, job_id);
}

StatusOr<std::vector<std::pair<int64_t, double>>> Store::ReadCurve(Statement& query,
                                                                   const std::string& job_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  query.Bind(1, job_id);
  using Point = std::pair<int64_t, double>;
  return CollectRows<Point>(query, [](const Statement& s) { return Point{s.Int(0), s.Double(1)}; });
}

StatusOr<std::map<std::string, v1::StepMetrics>> Store::LatestMetricsPerJob() {
  return LatestPerJob(*latest_metrics_);
}

StatusOr<std::map<std::string, v1::StepMetrics>> Store::LatestEvalPerJob() {
  return LatestPerJob(*latest_eval_);
}

StatusOr<std::map<std::string, v1::StepMetrics>> Store::LatestPerJob(Statement& query) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  QLORAD_ASSIGN_OR_RETURN(auto rows, CollectRows<Stored<v1::StepMetrics>>(query, ReadMetricsRow));
  std::map<std::string, v1::StepMetrics> latest;
  for (auto& row : rows) latest[row.value.job_id()] = std::move(row.value);
  return latest;
}

StatusOr<v1::LogLine> Store::AppendLog(v1::LogLine line) {
  Status written = Transaction([&]() -> Status {
    {
      StatementScope next(*next_log_seq_);
      next->Bind(1, line.job_id());
      QLORAD_ASSIGN_OR_RETURN(bool has_row, next->Step());
      line.set_seq(has_row ? next->Int(0) : 1);
    }
    Statement& s = *insert_log_;
    s.Bind(1, line.job_id()).Bind(2, line.seq()).Bind(3, line.level()).Bind(4, line.message());
    s.Bind(5, line.source()).Bind(6, line.unix_ms()).Bind(7, line.rank());
    return s.Run();
  });
  if (!written.ok()) return written;
  return line;
}

StatusOr<std::vector<Stored<v1::LogLine>>> Store::ReadLogs(const std::string& job_id,
                                                           int64_t after_seq, int limit) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  read_logs_->Bind(1, job_id).Bind(2, after_seq).Bind(3, limit);
  return CollectRows<Stored<v1::LogLine>>(*read_logs_, [](const Statement& s) {
    v1::LogLine line = ReadLogRow(s);
    return Stored<v1::LogLine>{line.seq(), std::move(line)};
  });
}

Status Store::UpsertWorker(const WorkerRecord& w) {
  return Transaction([&]() -> Status {
    Statement& s = *upsert_worker_;
    s.Bind(1, w.name).Bind(2, w.id).Bind(3, w.hostname).Bind(4, w.devices).Bind(5, w.version);
    s.Bind(6, w.registered_unix_ms).Bind(7, w.online ? 1 : 0);
    return s.Run();
  });
}

Status Store::SetWorkerOnline(const std::string& id, bool online) {
  return Transaction(
      [&]() -> Status { return set_worker_online_->Bind(1, id).Bind(2, online ? 1 : 0).Run(); });
}

Status Store::MarkAllWorkersOffline() {
  return Transaction([&]() -> Status { return db_->Exec("UPDATE workers SET online=0"); });
}

StatusOr<std::vector<WorkerRecord>> Store::ListWorkers() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return CollectRows<WorkerRecord>(*list_workers_, ReadWorkerRow);
}

}  // namespace qlorad::server
