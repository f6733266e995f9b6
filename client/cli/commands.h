// qloractl's commands. Each returns the process exit code (exit_codes.h) and prints to the
// context's streams only, so they run the same from main() and from tests.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

#include "client/cli/args.h"
#include "client/cli/command_context.h"

namespace qlorad::cli {

int Submit(const CommandContext& ctx);
int ListJobs(const CommandContext& ctx);
int ShowStatus(const CommandContext& ctx);
int Cancel(const CommandContext& ctx);
int Retry(const CommandContext& ctx);
int ListWorkers(const CommandContext& ctx);
// Needs no coordinator: RunCommand calls it before connecting.
int PrintCompletion(const CliOptions& options, std::ostream& out);
int Watch(const CommandContext& ctx, const std::string& job_id, int64_t from_step);
int Logs(const CommandContext& ctx);

// Connects to options.server and runs options.command.
int RunCommand(const CliOptions& options, std::ostream& out, std::ostream& err, bool tty);

}  // namespace qlorad::cli
