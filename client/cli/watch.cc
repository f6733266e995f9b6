// watch: StreamMetrics until the server ends the stream (the job is terminal and every stored
// step was sent), then GetJob for the final state, which decides the exit code.
#include "client/cli/commands.h"
#include "client/cli/exit_codes.h"
#include "client/cli/interrupt.h"
#include "client/cli/job_text.h"
#include "client/cli/json_output.h"
#include "client/cli/rpc.h"
#include "client/cli/step_printer.h"

namespace qlorad::cli {
namespace {

StepFormat FormatFor(const CommandContext& ctx) {
  if (ctx.options.json) return StepFormat::kJson;
  return ctx.tty ? StepFormat::kProgressBar : StepFormat::kLines;
}

}  // namespace

int Watch(const CommandContext& ctx, const std::string& job_id, int64_t from_step) {
  qlorad::v1::StreamMetricsRequest request;
  request.set_job_id(job_id);
  request.set_from_step(from_step);
  StepPrinter printer(ctx.out, FormatFor(ctx));
  grpc::ClientContext context;
  grpc::Status status;
  bool interrupted = false;
  {
    const CancelOnInterrupt cancel_on_interrupt(context);
    auto reader = ctx.stub.StreamMetrics(&context, request);
    qlorad::v1::StepMetrics step;
    while (reader->Read(&step)) printer.Print(step);
    printer.Finish();
    status = reader->Finish();
    interrupted = cancel_on_interrupt.interrupted();
  }
  if (interrupted) {
    ctx.err << "stopped following " << job_id << "; the job keeps running (qloractl cancel "
            << job_id << " stops it)\n";
    return kExitInterrupted;
  }
  if (!status.ok()) return ReportRpcError(status, ctx.options.server, ctx.err);

  qlorad::v1::GetJobRequest get;
  get.set_job_id(job_id);
  qlorad::v1::Job job;
  if (auto failed = CallUnary(ctx, &qlorad::v1::JobService::StubInterface::GetJob, get, &job)) {
    return *failed;
  }
  if (ctx.options.json) {
    ctx.out << ToJson(job).dump() << "\n";
  } else {
    ctx.out << FormatFinalState(job);
  }
  if (job.state() == qlorad::v1::JOB_STATE_COMPLETED) return kExitOk;
  if (!IsTerminal(job.state())) {
    ctx.err << "error: the metrics stream of " << job_id << " ended while the job is "
            << JobStateName(job.state()) << "\n";
  }
  return kExitFailed;
}

}  // namespace qlorad::cli
