// logs: StreamLogs. With --follow, until the server ends the stream (the job is terminal).
// Without it, only what is stored: for a terminal job the server ends the stream after the
// stored lines; for a live job we stop once no line has come for kQuietPeriod (quiet_cutoff.h).
#include <memory>

#include "client/cli/commands.h"
#include "client/cli/exit_codes.h"
#include "client/cli/job_text.h"
#include "client/cli/json_output.h"
#include "client/cli/quiet_cutoff.h"
#include "client/cli/rpc.h"

namespace qlorad::cli {
namespace {

constexpr std::chrono::milliseconds kQuietPeriod{1000};

}  // namespace

int Logs(const CommandContext& ctx) {
  const std::string& job_id = ctx.options.job_id;
  qlorad::v1::GetJobRequest get;
  get.set_job_id(job_id);
  qlorad::v1::Job job;
  if (auto failed = CallUnary(ctx, &qlorad::v1::JobService::StubInterface::GetJob, get, &job)) {
    return *failed;
  }

  qlorad::v1::StreamLogsRequest request;
  request.set_job_id(job_id);
  request.set_from_seq(ctx.options.from_seq);
  grpc::ClientContext context;
  std::unique_ptr<QuietCutoff> cutoff;
  if (!ctx.options.follow && !IsTerminal(job.state())) {
    cutoff = std::make_unique<QuietCutoff>(context, kQuietPeriod);
  }
  auto reader = ctx.stub.StreamLogs(&context, request);
  qlorad::v1::LogLine line;
  while (reader->Read(&line)) {
    if (cutoff) cutoff->Touch();
    if (ctx.options.json) {
      ctx.out << JsonLine("log", line) << "\n";
    } else {
      ctx.out << FormatLogLine(line) << "\n";
    }
    ctx.out.flush();
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok() && !(cutoff && cutoff->fired())) {
    return ReportRpcError(status, ctx.options.server, ctx.err, ctx.options.json);
  }
  return kExitOk;
}

}  // namespace qlorad::cli
