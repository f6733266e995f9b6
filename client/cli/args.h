// qloractl's command line: global options, one command, its arguments. Parsing is separate from
// running so that usage errors (exit code 2) are unit-tested without a server.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "client/connect/connect.h"

namespace qlorad::cli {

enum class Command {
  kSubmit,
  kJobs,
  kStatus,
  kCancel,
  kWatch,
  kLogs,
  kRetry,
  kWorkers,
  kCompletion
};

struct CliOptions {
  std::string server = "127.0.0.1:50051";  // --server, or QLORAD_SERVER
  // --token (QLORAD_TOKEN), --tls, --ca-file (QLORAD_CA_FILE), --cert (QLORAD_CLIENT_CERT) and
  // --key (QLORAD_CLIENT_KEY): client/connect/connect.h.
  connect::SecurityFlags security;
  bool json = false;  // --json: one JSON object per line
  Command command = Command::kJobs;
  std::string spec_file;            // submit FILE
  bool follow = false;              // submit --follow, logs --follow, retry --follow
  bool from_scratch = false;        // retry --from-scratch
  std::string shell;                // completion bash|zsh
  std::vector<std::string> states;  // jobs --state (lower case, validated)
  int limit = 0;                    // jobs --limit (0: every job)
  std::string job_id;               // status, cancel, watch, logs, retry
  int64_t from_step = 0;            // watch --from-step
  int64_t from_seq = 0;             // logs --from-seq
  // watch, submit --follow: how long to keep reconnecting to a coordinator that went away.
  int reconnect_timeout_s = 120;
};

struct ParsedArgs {
  std::optional<CliOptions> options;  // set when a command should run
  int exit_code = 0;                  // otherwise: 0 after --help, 2 after a usage error
};

// Help goes to out; usage errors go to err as "error: <what>" plus a hint to run --help.
ParsedArgs ParseArgs(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace qlorad::cli
