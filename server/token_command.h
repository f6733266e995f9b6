// `qlorad token create|list|revoke`: an operator's commands on the tokens table of the
// coordinator's store (auth.h has the roles). They open the SQLite file directly, so they work
// whether or not the coordinator runs; a running coordinator reads tokens on every call, so a
// revoke takes effect at once. The secret of a new token is printed once, alone on stdout (so
// `TOKEN=$(qlorad token create ...)` works); the store keeps only its hash. A token may expire
// (--expires-in 30d, or --expires-at a UTC time); `list` shows when, and which have.
#pragma once

#include <CLI/CLI.hpp>
#include <ostream>
#include <string>

namespace qlorad::server {

struct TokenCommand {
  CLI::App* app = nullptr;  // the `token` subcommand, once added
  std::string db = "qlorad.db";
  std::string user;  // create: the user (or worker) name
  std::string role = "user";
  int64_t expires_in_s = 0;  // create: --expires-in, in seconds; 0 when not given
  std::string expires_at;    // create: --expires-at, "2027-01-31T00:00:00Z"
  std::string id;            // revoke
};

// Adds `token` with `create`, `list` and `revoke` to the coordinator's command line.
void AddTokenCommand(CLI::App& app, TokenCommand& command);

// Runs the subcommand that was parsed; returns the exit code (1 with the error on `err`).
int RunTokenCommand(const TokenCommand& command, std::ostream& out, std::ostream& err);

}  // namespace qlorad::server
