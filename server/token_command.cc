#include "server/token_command.h"

#include <fmt/format.h>

#include <ctime>

#include "server/auth.h"
#include "server/coordinator.h"
#include "server/store.h"

namespace qlorad::server {
namespace {

std::string FormatTime(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

Status Create(Store& store, const TokenCommand& command, std::ostream& out, std::ostream& err) {
  QLORAD_ASSIGN_OR_RETURN(Role role, ParseRole(command.role));
  auto issued = IssueToken(store, role, command.user);
  if (!issued.ok()) {
    // The flag the operator typed, rather than the field's inner name.
    std::string message = issued.status().message();
    if (message.rfind("name: ", 0) == 0) message = "--user: " + message.substr(6);
    return Status(issued.status().code(), message);
  }
  const TokenRecord& token = issued->record;
  err << fmt::format("created token {} ({} {}); this is the only time it is shown:\n", token.id,
                     token.role, token.name.empty() ? "-" : token.name);
  out << issued->secret << std::endl;
  return Status::Ok();
}

Status List(Store& store, std::ostream& out) {
  QLORAD_ASSIGN_OR_RETURN(auto tokens, store.ListTokens());
  out << fmt::format("{:<14} {:<8} {:<24} {:<21} {}\n", "ID", "ROLE", "NAME", "CREATED", "REVOKED");
  for (const TokenRecord& t : tokens) {
    out << fmt::format("{:<14} {:<8} {:<24} {:<21} {}\n", t.id, t.role,
                       t.name.empty() ? "-" : t.name, FormatTime(t.created_unix_ms),
                       FormatTime(t.revoked_unix_ms));
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
