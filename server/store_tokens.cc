// The store's tokens table (schema version 4; 5 added expires_at): who may call the
// coordinator, as hashes.
#include "server/store.h"

namespace qlorad::server {
namespace {

constexpr const char* kTokenColumns =
    "id, hash, role, name, created_unix_ms, revoked_unix_ms, expires_at";

TokenRecord ReadTokenRow(const Statement& s) {
  TokenRecord t;
  t.id = s.Text(0);
  t.hash = s.Text(1);
  t.role = s.Text(2);
  t.name = s.Text(3);
  t.created_unix_ms = s.Int(4);
  t.revoked_unix_ms = s.Int(5);
  if (!s.IsNull(6)) t.expires_unix_ms = s.Int(6);
  return t;
}

}  // namespace

Status Store::InsertToken(const TokenRecord& t) {
  return Transaction([&]() -> Status {
    QLORAD_ASSIGN_OR_RETURN(auto taken, SelectTokens("id = ?1", t.id));
    if (!taken.empty()) return {StatusCode::kAlreadyExists, "token " + t.id + " already exists"};
    QLORAD_ASSIGN_OR_RETURN(auto insert,
                            db_->Prepare(std::string("INSERT INTO tokens (") + kTokenColumns +
                                         ") VALUES (?1,?2,?3,?4,?5,?6,?7)"));
    insert->Bind(1, t.id).Bind(2, t.hash).Bind(3, t.role).Bind(4, t.name);
    insert->Bind(5, t.created_unix_ms).Bind(6, t.revoked_unix_ms);
    // Left unbound, ?7 is NULL: never expires.
    if (t.expires_unix_ms) insert->Bind(7, *t.expires_unix_ms);
    return insert->Run();
  });
}

StatusOr<std::optional<TokenRecord>> Store::FindToken(const std::string& hash) {
  QLORAD_ASSIGN_OR_RETURN(auto rows, SelectTokens("hash = ?1", hash));
  if (rows.empty()) return std::optional<TokenRecord>();
  return std::optional<TokenRecord>(std::move(rows.front()));
}

StatusOr<std::vector<TokenRecord>> Store::ListTokens() {
  return SelectTokens("?1 = ''", "");
}

Status Store::RevokeToken(const std::string& id, int64_t now_unix_ms) {
  return Transaction([&]() -> Status {
    QLORAD_ASSIGN_OR_RETURN(auto rows, SelectTokens("id = ?1", id));
    if (rows.empty())
      return NotFound("token " + id + " not found (`qlorad token list` shows them)");
    if (rows.front().revoked()) return Status::Ok();
    QLORAD_ASSIGN_OR_RETURN(auto update,
                            db_->Prepare("UPDATE tokens SET revoked_unix_ms=?2 WHERE id=?1"));
    return update->Bind(1, id).Bind(2, now_unix_ms).Run();
  });
}

StatusOr<std::vector<TokenRecord>> Store::SelectTokens(const std::string& where,
                                                       const std::string& value) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  QLORAD_ASSIGN_OR_RETURN(
      auto select, db_->Prepare(std::string("SELECT ") + kTokenColumns + " FROM tokens WHERE " +
                                where + " ORDER BY created_unix_ms, id"));
  select->Bind(1, value);
  return CollectRows<TokenRecord>(*select, ReadTokenRow);
}

}  // namespace qlorad::server
