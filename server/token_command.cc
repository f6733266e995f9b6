#include "server/token_command.h"

#include <fmt/format.h>

#include <optional>

#include "server/auth.h"
#include "server/coordinator.h"
#include "server/store.h"
#include "server/token_time.h"

namespace qlorad::server {
namespace {

std::string FormatTime(int64_t unix_ms) {
  return unix_ms == 0 ? "-" : FormatTokenTime(unix_ms);
}

// When the token is to expire: none without either flag (CLI11 lets only one through).
StatusOr<std::optional<int64_t>> Expiry(const TokenCommand& command, int64_t now) {
  if (command.expires_in_s > 0) return std::optional(now + command.expires_in_s * 1000);
  if (command.expires_at.empty()) return std::optional<int64_t>();
  QLORAD_ASSIGN_OR_RETURN(int64_t at, ParseTokenTime(command.expires_at, "--expires-at"));
  return std::optional(at);
}

Status Create(Store& store, const TokenCommand& command, std::ostream& out, std::ostream& err) {
  QLORAD_ASSIGN_OR_RETURN(Role role, ParseRole(command.role));
  const int64_t now = NowUnixMs();
  QLORAD_ASSIGN_OR_RETURN(std::optional<int64_t> expires, Expiry(command, now));
  auto issued = IssueToken(store, role, command.user, /*unique_name=*/false, expires, now);
  if (!issued.ok()) {
    // The flag the operator typed, rather than the field's inner name.
    std::string message = issued.status().message();
    if (message.rfind("name: ", 0) == 0) message = "--user: " + message.substr(6);
    return Status(issued.status().code(), message);
  }
  const TokenRecord& token = issued->record;
  std::string expiry;
  if (expires) {
    expiry = ", expires " + FormatTokenTime(*expires) +
             (token.expired(token.created_unix_ms) ? " (already expired)" : "");
  }
  err << fmt::format("created token {} ({} {}{}); this is the only time it is shown:\n", token.id,
                     token.role, token.name.empty() ? "-" : token.name, expiry);
  out << issued->secret << std::endl;
  return Status::Ok();
}

Status List(Store& store, std::ostream& out) {
  QLORAD_ASSIGN_OR_RETURN(auto tokens, store.ListTokens());
  const int64_t now = NowUnixMs();
  constexpr const char* kRow = "{:<14} {:<8} {:<24} {:<21} {:<21} {:<21} {}\n";
  out << fmt::format(kRow, "ID", "ROLE", "NAME", "CREATED", "EXPIRES", "REVOKED", "STATE");
  for (const TokenRecord& t : tokens) {
    const std::string expires =
        t.expires_unix_ms ? FormatTokenTime(*t.expires_unix_ms) : std::string("never");
    const char* state = t.revoked() ? "revoked" : t.expired(now) ? "expired" : "valid";
    out << fmt::format(kRow, t.id, t.role, t.name.empty() ? "-" : t.name,
                       FormatTime(t.created_unix_ms), expires, FormatTime(t.revoked_unix_ms),
                       state);
  }
  return Status::Ok();
}

}  // namespace

void AddTokenCommand(CLI::App& app, TokenCommand& command) {
  command.app = app.add_subcommand("token", "Create, list and revoke access tokens (then exit)");
  command.app->require_subcommand(1);
  command.app->add_option("--db", command.db, "the coordinator's SQLite store")
      ->capture_default_str();
  auto* create = command.app->add_subcommand(
      "create",
      "Make a token and print it (once): users and admins for clients, metrics for "
      "Prometheus, enroll for workers");
  create->add_option("--user", command.user, "who holds it: a user name, or a worker's name");
  create->add_option("--role", command.role, "user, admin, metrics, enroll or worker")
      ->capture_default_str();
  auto* expires_in =
      create
          ->add_option("--expires-in", command.expires_in_s,
                       "refuse it after this long: a number and s, m, h, d or w (30d, 12h)")
          ->transform(DurationSeconds())
          ->check(PositiveLifetime());
  auto* expires_at = create->add_option(
      "--expires-at", command.expires_at,
      "refuse it from this UTC time on, like 2027-01-31T00:00:00Z (default: never expires)");
  expires_in->excludes(expires_at);
  auto* list = command.app->add_subcommand("list", "Show every token (never the secrets)");
  auto* revoke = command.app->add_subcommand("revoke", "Refuse a token from now on");
  revoke->add_option("id", command.id, "the token's id, as `list` shows it")->required();
  // `--db` may follow the action: `qlorad token list --db /var/lib/qlorad/qlorad.db`.
  for (CLI::App* action : {create, list, revoke}) action->fallthrough();
}

int RunTokenCommand(const TokenCommand& command, std::ostream& out, std::ostream& err) {
  Status status = [&]() -> Status {
    QLORAD_ASSIGN_OR_RETURN(auto store, Store::Open(command.db));
    if (command.app->got_subcommand("create")) return Create(*store, command, out, err);
    if (command.app->got_subcommand("list")) return List(*store, out);
    QLORAD_RETURN_IF_ERROR(store->RevokeToken(command.id, NowUnixMs()));
    err << "revoked token " << command.id << "\n";
    return Status::Ok();
  }();
  if (status.ok()) return 0;
  err << "qlorad token: " << status.ToString() << "\n";
  return 1;
}

}  // namespace qlorad::server
