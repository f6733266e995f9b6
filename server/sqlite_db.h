// A thin RAII layer over the SQLite C API: one connection, prepared statements with typed
// binds and columns. Errors come back as Status naming the SQL that failed, so a store error
// in the coordinator log says what was being done.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace qlorad::server {

class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Binds are 1-based like SQLite's; each returns *this so a row binds in one expression.
  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, int value) { return Bind(index, static_cast<int64_t>(value)); }
  Statement& Bind(int index, double value);  // NaN too: Double() reads it back as NaN
  Statement& Bind(int index, const std::string& value);
  Statement& Bind(int index, std::optional<double> value);  // nullopt binds NULL

  // Steps once: true while a row is available, false when done. Errors set *status.
  StatusOr<bool> Step();
  // Runs a statement that returns no rows, then resets it for reuse.
  Status Run();
  // Clears bindings and rewinds, so a cached statement can be used again.
  void Reset();

  int64_t Int(int column) const;
  double Double(int column) const;
  std::string Text(int column) const;
  bool IsNull(int column) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

// Resets a cached statement when the scope that used it ends, whatever path it takes.
class StatementScope {
 public:
  explicit StatementScope(Statement& s) : s_(s) {}
  StatementScope(const StatementScope&) = delete;
  StatementScope& operator=(const StatementScope&) = delete;
  ~StatementScope() { s_.Reset(); }
  Statement* operator->() { return &s_; }
  Statement& operator*() { return s_; }

 private:
  Statement& s_;
};

// Collects every row a statement yields, resetting it afterwards.
template <typename T, typename ReadRow>
StatusOr<std::vector<T>> CollectRows(Statement& s, ReadRow read_row) {
  StatementScope scope(s);
  std::vector<T> rows;
  while (true) {
    QLORAD_ASSIGN_OR_RETURN(bool has_row, s.Step());
    if (!has_row) return rows;
    rows.push_back(read_row(s));
  }
}

class Database {
 public:
  static StatusOr<std::unique_ptr<Database>> Open(const std::string& path);
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database();

  Status Exec(const std::string& sql);
  StatusOr<std::unique_ptr<Statement>> Prepare(const std::string& sql);
  const std::string& path() const { return path_; }
  // Rows changed by the last INSERT/UPDATE/DELETE, and the row id the last INSERT created.
  int64_t Changes() const { return sqlite3_changes64(db_); }
  int64_t LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

 private:
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
};

}  // namespace qlorad::server
