// logs: StreamLogs. With --follow, until the server ends the stream (the job is terminal).
// Without it, only what is stored: for a terminal job the server ends the stream after the
// stored lines; for a live job we stop once no line has come for kQuietPeriod (quiet_cutoff.h),
// or at the first line logged after the call began (kSkewMargin past it, for the coordinator's
// clock): a job that logs more often than the quiet period (a checkpoint line every fraction of a
// second) would otherwise keep the command running until the job ends.
#include <chrono>
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
constexpr std::chrono::milliseconds kSkewMargin{1000};

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

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
  const int64_t newer_than_ms = NowUnixMs() + kSkewMargin.count();
  bool reached_new_lines = false;
  auto reader = ctx.stub.StreamLogs(&context, request);
  qlorad::v1::LogLine line;
  while (reader->Read(&line)) {
    if (cutoff) {
      if (line.unix_ms() > newer_than_ms) {
        reached_new_lines = true;  // logged after the call: not one of the stored lines
        context.TryCancel();
        break;
      }
      cutoff->Touch();
    }
    if (ctx.options.json) {
      ctx.out << JsonLine("log", line) << "\n";
    } else {
      ctx.out << FormatLogLine(line) << "\n";
    }
    ctx.out.flush();
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok() && !reached_new_lines && !(cutoff && cutoff->fired())) {
    return ReportRpcError(status, ctx.options.server, ctx.err, ctx.options.json);
  }
  return kExitOk;
}

}  // namespace qlorad::cli
