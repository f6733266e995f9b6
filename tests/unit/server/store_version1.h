// The store's tables as schema version 1 created them (coordinators before evaluation during
// training and before restarts were counted), for tests that open such a file and expect it
// upgraded in place.
#pragma once

namespace qlorad::server::testing {

constexpr const char* kVersion1Tables = R"sql(
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE jobs (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, state INTEGER NOT NULL, spec_yaml TEXT NOT NULL,
  priority INTEGER NOT NULL, attempt INTEGER NOT NULL, max_restarts INTEGER NOT NULL,
  worker_id TEXT NOT NULL, created_unix_ms INTEGER NOT NULL, started_unix_ms INTEGER NOT NULL,
  finished_unix_ms INTEGER NOT NULL, last_step INTEGER NOT NULL, total_steps INTEGER NOT NULL,
  last_loss REAL NOT NULL, error TEXT NOT NULL, adapter_path TEXT NOT NULL, gpus INTEGER NOT NULL,
  last_checkpoint TEXT NOT NULL, cancel_requested INTEGER NOT NULL);
CREATE TABLE metrics (
  id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL REFERENCES jobs (id),
  attempt INTEGER NOT NULL, rank INTEGER NOT NULL, step INTEGER NOT NULL,
  total_steps INTEGER NOT NULL, loss REAL NOT NULL, lr REAL NOT NULL, grad_norm REAL NOT NULL,
  tokens_per_s REAL NOT NULL, vram_allocated_bytes INTEGER NOT NULL,
  vram_reserved_bytes INTEGER NOT NULL, vram_peak_bytes INTEGER NOT NULL,
  wall_time_s REAL NOT NULL);
)sql";

}  // namespace qlorad::server::testing
