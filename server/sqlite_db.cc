#include "server/sqlite_db.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace qlorad::server {
namespace {

// SQLite stores infinities as REAL but binds a NaN as NULL, which a NOT NULL column refuses and a
// nullable one reads as "no value". A diverged step's loss is NaN and must be kept as such, so a
// NaN is stored as this text, which REAL affinity leaves as text (it does not look like a number),
// and read back as NaN. Existing files need no change: they hold no such text.
constexpr char kNanText[] = "NaN";

}  // namespace

Statement::~Statement() {
  sqlite3_finalize(stmt_);
}

Statement& Statement::Bind(int index, int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
  return *this;
}

Statement& Statement::Bind(int index, double value) {
  if (std::isnan(value)) {
    sqlite3_bind_text(stmt_, index, kNanText, -1, SQLITE_STATIC);
    return *this;
  }
  sqlite3_bind_double(stmt_, index, value);
  return *this;
}

Statement& Statement::Bind(int index, const std::string& value) {
  sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::Bind(int index, std::optional<double> value) {
  if (!value) {
    sqlite3_bind_null(stmt_, index);
    return *this;
  }
  return Bind(index, *value);
}

StatusOr<bool> Statement::Step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Internal(std::string("sqlite: ") + sqlite3_errmsg(db_) + " in: " + sqlite3_sql(stmt_));
}

Status Statement::Run() {
  auto stepped = Step();
  Reset();
  return stepped.ok() ? Status::Ok() : stepped.status();
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

int64_t Statement::Int(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

double Statement::Double(int column) const {
  if (sqlite3_column_type(stmt_, column) == SQLITE_TEXT &&
      std::strcmp(reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column)), kNanText) ==
          0) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return sqlite3_column_double(stmt_, column);
}

bool Statement::IsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::string Statement::Text(int column) const {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  return text ? std::string(text, sqlite3_column_bytes(stmt_, column)) : std::string();
}

StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return Unavailable("cannot open database " + path + ": " + why);
  }
  // Readers and the writer share this connection under the store's lock; the busy timeout only
  // matters when another process (a second coordinator by mistake, a sqlite3 shell) holds it.
  sqlite3_busy_timeout(db, 5000);
  return std::unique_ptr<Database>(new Database(db, path));
}

Database::~Database() {
  sqlite3_close(db_);
}

Status Database::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string message = "sqlite: " + std::string(err ? err : "unknown error") + " in: " + sql;
    sqlite3_free(err);
    return Internal(message);
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<Statement>> Database::Prepare(const std::string& sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
    return Internal("sqlite: " + std::string(sqlite3_errmsg(db_)) + " preparing: " + sql);
  }
  return std::make_unique<Statement>(db_, stmt);
}

}  // namespace qlorad::server
