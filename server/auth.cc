#include "server/auth.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <regex>

#include "server/auth_token.h"
#include "server/coordinator.h"
#include "server/ids.h"
#include "server/token_time.h"

namespace qlorad::server {
namespace {

constexpr Role kRoles[] = {Role::kUser, Role::kAdmin, Role::kMetrics, Role::kEnroll, Role::kWorker};

// Names end up in logs, job listings and the dashboard: keep them plain.
const std::regex kNamePattern("[A-Za-z0-9][A-Za-z0-9._@-]{0,63}");

constexpr char kHowToGetOne[] =
    "pass a token (qloractl --token or QLORAD_TOKEN; an admin makes one with `qlorad token "
    "create --db DB --user NAME`)";

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kUser:
      return "user";
    case Role::kAdmin:
      return "admin";
    case Role::kMetrics:
      return "metrics";
    case Role::kEnroll:
      return "enroll";
    case Role::kWorker:
      return "worker";
  }
  return "unknown";
}

StatusOr<Role> ParseRole(const std::string& name) {
  for (Role role : kRoles) {
    if (name == RoleName(role)) return role;
  }
  return InvalidArgument("--role: '" + name +
                         "' is not one of user, admin, metrics, enroll, worker");
}

std::string Principal::Describe() const {
  if (local()) return "the local caller (--insecure-local)";
  std::string who = std::string(RoleName(role)) + (name.empty() ? "" : " " + name);
  return who + " (token " + token_id + ")";
}

StatusOr<Principal> Authenticator::Authenticate(const std::string& authorization) const {
  if (authorization.empty()) {
    if (insecure_local_) return LocalAdmin();
    return Unauthenticated(std::string("no token: ") + kHowToGetOne);
  }
  // RFC 6750: "Bearer" is case-insensitive, then one or more spaces.
  const std::string scheme = "bearer ";
  std::string head = authorization.substr(0, scheme.size());
  std::transform(head.begin(), head.end(), head.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (head != scheme) {
    return Unauthenticated("authorization: expected 'Bearer TOKEN'");
  }
  const auto start = authorization.find_first_not_of(' ', scheme.size());
  return AuthenticateToken(start == std::string::npos ? "" : authorization.substr(start));
}

StatusOr<Principal> Authenticator::AuthenticateToken(const std::string& token) const {
  if (token.empty()) return Unauthenticated(std::string("empty token: ") + kHowToGetOne);
  QLORAD_ASSIGN_OR_RETURN(auto found, store_.FindToken(TokenHash(token)));
  if (!found) return Unauthenticated(std::string("unknown token: ") + kHowToGetOne);
  if (found->revoked()) return Unauthenticated("token " + found->id + " was revoked");
  if (found->expired(NowUnixMs())) {
    return Unauthenticated("token " + found->id + " expired at " +
                           FormatTokenTime(*found->expires_unix_ms) + ": " + kHowToGetOne);
  }
  auto role = ParseRole(found->role);
  if (!role.ok())
    return Internal("token " + found->id + " has an unknown role '" + found->role + "'");
  return Principal{found->name, *role, found->id};
}

StatusOr<IssuedToken> IssueToken(Store& store, Role role, const std::string& name, bool unique_name,
                                 std::optional<int64_t> expires_unix_ms, int64_t issued_unix_ms) {
  if (role != Role::kEnroll && name.empty()) {
    return InvalidArgument(fmt::format("name: required for a {} token", RoleName(role)));
  }
  if (!name.empty() && !std::regex_match(name, kNamePattern)) {
    return InvalidArgument("name: '" + name +
                           "' must be 1-64 of letters, digits, '.', '_', '@', '-'");
  }
  if (name == kLocalName) {
    return InvalidArgument(std::string("name: '") + kLocalName +
                           "' is the tokenless caller of --insecure-local");
  }
  QLORAD_ASSIGN_OR_RETURN(std::string secret, NewTokenSecret());
  const int64_t now = issued_unix_ms != 0 ? issued_unix_ms : NowUnixMs();
  IssuedToken issued{
      {RandomId("tok-"), TokenHash(secret), RoleName(role), name, now, 0, expires_unix_ms},
      std::move(secret)};
  QLORAD_RETURN_IF_ERROR(store.Transaction([&]() -> Status {
    if (unique_name) {
      QLORAD_ASSIGN_OR_RETURN(auto tokens, store.ListTokens());
      for (const TokenRecord& t : tokens) {
        if (t.valid(now) && t.role == issued.record.role && t.name == name) {
          return Status(StatusCode::kAlreadyExists,
                        fmt::format("{} '{}' already has token {}; revoke it first (`qlorad token "
                                    "revoke {}`)",
                                    RoleName(role), name, t.id, t.id));
        }
      }
    }
    return store.InsertToken(issued.record);
  }));
  return issued;
}

Status RequireRole(const Principal& caller, std::initializer_list<Role> allowed,
                   const std::string& what) {
  if (caller.local()) return Status::Ok();
  if (std::find(allowed.begin(), allowed.end(), caller.role) != allowed.end()) return Status::Ok();
  return PermissionDenied(caller.Describe() + " may not use " + what);
}

Status CheckJobAccess(const Principal& caller, const v1::Job& job) {
  if (!VisibleOwner(caller) || job.owner() == caller.name) return Status::Ok();
  return PermissionDenied("job " + job.id() + " belongs to another user; " + caller.Describe() +
                          " may not see or change it");
}

std::optional<std::string> VisibleOwner(const Principal& caller) {
  if (caller.role == Role::kAdmin) return std::nullopt;
  return caller.name;
}

}  // namespace qlorad::server
