// Who is calling, and what they may do (issue 19). Every gRPC call and every HTTP request but
// the login page carries a bearer token (`authorization: Bearer qlorad_...`, or the dashboard's
// cookie); the store maps its hash to a role and a name:
//   user     submits jobs and reads, follows and cancels its own (jobs carry their owner);
//   admin    does what users do, to every job;
//   metrics  reads /metrics and nothing else (Prometheus's scrape token);
//   enroll   calls WorkerService.Enroll and nothing else: it turns into a worker credential;
//   worker   the WorkerService calls of the one worker name it was enrolled as.
// Under --insecure-local a call without a token is the local admin "local" (loopback only,
// checked at start); a call with a token is still checked, so tokens work there too.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>

#include "common/status.h"
#include "qlorad/v1/common.pb.h"
#include "server/store.h"

namespace qlorad::server {

enum class Role { kUser, kAdmin, kMetrics, kEnroll, kWorker };

const char* RoleName(Role role);                    // "user", "admin", ...
StatusOr<Role> ParseRole(const std::string& name);  // INVALID_ARGUMENT listing the roles

// The name jobs get as owner when submitted without a token under --insecure-local.
inline constexpr char kLocalName[] = "local";

struct Principal {
  std::string name;  // the user or worker name; kLocalName for the local caller
  Role role = Role::kUser;
  std::string token_id;  // empty for the local caller

  bool local() const { return token_id.empty(); }
  // "user alice (token tok-1a2b3c4d)", for errors and logs.
  std::string Describe() const;
};

// The caller of a call without a token under --insecure-local: an admin.
inline Principal LocalAdmin() {
  return {kLocalName, Role::kAdmin, ""};
}

class Authenticator {
 public:
  Authenticator(Store& store, bool insecure_local)
      : store_(store), insecure_local_(insecure_local) {}

  // `authorization` is the header's value ("Bearer TOKEN"), or "" when none came. UNAUTHENTICATED
  // says what was wrong and how to get a token; the token itself is never echoed.
  StatusOr<Principal> Authenticate(const std::string& authorization) const;
  // As Authenticate, for a bare token (the dashboard's cookie).
  StatusOr<Principal> AuthenticateToken(const std::string& token) const;
  bool insecure_local() const { return insecure_local_; }

 private:
  Store& store_;
  const bool insecure_local_;
};

// A new token of `role` for `name` (checked: plain characters, not kLocalName; required but for
// enroll tokens), stored as its hash; returns the record and the secret, which is shown once.
// With unique_name, ALREADY_EXISTS when a valid token of that role and name exists: a worker name
// is enrolled once, so an enrollment token cannot take over a running worker's name. With
// expires_unix_ms the token is refused from then on (a time already past is allowed: tests).
// issued_unix_ms is its creation time, 0 for the clock's now (a caller that computed the expiry
// from a lifetime passes the now it used, so that the two are exactly that lifetime apart).
struct IssuedToken {
  TokenRecord record;
  std::string secret;
};
StatusOr<IssuedToken> IssueToken(Store& store, Role role, const std::string& name,
                                 bool unique_name = false,
                                 std::optional<int64_t> expires_unix_ms = std::nullopt,
                                 int64_t issued_unix_ms = 0);

// PERMISSION_DENIED naming the caller and `what` unless its role is one of `allowed` (the local
// caller may do anything).
Status RequireRole(const Principal& caller, std::initializer_list<Role> allowed,
                   const std::string& what);
// PERMISSION_DENIED unless the caller owns the job or is an admin.
Status CheckJobAccess(const Principal& caller, const v1::Job& job);
// Whose jobs the caller may list: nullopt for everyone's (admins).
std::optional<std::string> VisibleOwner(const Principal& caller);

}  // namespace qlorad::server
