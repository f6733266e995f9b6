// Connects to the coordinator and runs the parsed command.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include "client/cli/commands.h"
#include "client/cli/errors.h"
#include "client/cli/exit_codes.h"
#include "client/cli/terminal.h"
#include "client/connect/connect.h"
#include "proto/keepalive.h"

namespace qlorad::cli {

int RunCommand(const CliOptions& options, std::ostream& out, std::ostream& err, bool tty) {
  // Before the security options are loaded: a shell's start-up file should not fail for them.
  if (options.command == Command::kCompletion) return PrintCompletion(options, out);
  auto security = connect::LoadSecurity(options.security);
  if (!security.ok()) {
    return ReportError(err, options.json, "USAGE", security.status().message(), kExitUsage);
  }
  grpc::ChannelArguments args;
  SetClientKeepalive(args);  // `watch` and `logs --follow` streams may sit idle for hours
  auto stub = qlorad::v1::JobService::NewStub(connect::Connect(options.server, *security, args));
  const CommandContext ctx{options, *stub, out,
                           err,     tty,   tty ? TerminalColumns(STDOUT_FILENO) : 80};
  switch (options.command) {
    case Command::kSubmit:
      return Submit(ctx);
    case Command::kJobs:
      return ListJobs(ctx);
    case Command::kStatus:
      return ShowStatus(ctx);
    case Command::kCancel:
      return Cancel(ctx);
    case Command::kRetry:
      return Retry(ctx);
    case Command::kWorkers:
      return ListWorkers(ctx);
    case Command::kCompletion:
      return PrintCompletion(options, out);
    case Command::kWatch:
      return Watch(ctx, options.job_id, options.from_step);
    case Command::kLogs:
      return Logs(ctx);
  }
  return kExitUsage;
}

}  // namespace qlorad::cli
