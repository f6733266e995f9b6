// watch: follows a job until it ends, then prints the final state, which decides the exit code.
// Each round asks GetJob where the job stands and reads StreamMetrics from the last step shown;
// the server ends the stream once the job is terminal and every stored step was sent. While the
// job is queued the stream gets a short deadline, so the queued line is refreshed. When the
// coordinator goes away (restart, dropped connection) the round is retried with a backoff
// (reconnect.h), and the steps a new stream repeats are skipped (step_cursor.h).
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "client/cli/commands.h"
#include "client/cli/errors.h"
#include "client/cli/exit_codes.h"
#include "client/cli/follow_notes.h"
#include "client/cli/interrupt.h"
#include "client/cli/job_text.h"
#include "client/cli/json_output.h"
#include "client/cli/reconnect.h"
#include "client/cli/rpc.h"
#include "client/cli/step_cursor.h"
#include "client/cli/step_printer.h"

namespace qlorad::cli {
namespace {

using std::chrono::system_clock;

// How often the queued line is refreshed (and the job's state asked for) before the first step.
constexpr std::chrono::seconds kQueuedRefresh{1};

StepFormat FormatFor(const CommandContext& ctx) {
  if (ctx.options.json) return StepFormat::kJson;
  return ctx.tty ? StepFormat::kProgressBar : StepFormat::kLines;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             system_clock::now().time_since_epoch())
      .count();
}

class Follower {
 public:
  Follower(const CommandContext& ctx, const std::string& job_id, int64_t from_step)
      : ctx_(ctx),
        job_id_(job_id),
        printer_(ctx.out, FormatFor(ctx), ctx.columns),
        notes_(ctx, printer_),
        cursor_(from_step),
        backoff_(std::chrono::seconds(ctx.options.reconnect_timeout_s)) {}

  int Run() {
    for (;;) {
      qlorad::v1::Job job;
      grpc::Status status = GetJob(&job);
      if (status.ok()) {
        if (backoff_.lost()) notes_.Reconnected(cursor_.ResumeFrom());
        backoff_.Reset();
        connected_ = true;
        notes_.Job(job, NowUnixMs(), shown_step_);
        status = Stream(job.state() == qlorad::v1::JOB_STATE_QUEUED);
        if (status.ok()) return Finish();
        if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) continue;  // queued
      }
      if (interrupt_.interrupted()) return Detach();
      // Never connected: a wrong --server is reported at once, not retried.
      if (!connected_ || !IsReconnectable(status)) return Fail(status);
      const auto wait = backoff_.NextWait(ReconnectBackoff::Clock::now());
      if (!wait) return GiveUp(status);
      wait_ = *wait;
      notes_.Reconnecting(status, backoff_.tries(), *wait);
    }
  }

 private:
  // During an outage the call waits (wait_for_ready) for the coordinator to come back, up to the
  // backoff's wait: a restart is noticed as soon as it is done, and Ctrl-C still cancels it.
  grpc::Status GetJob(qlorad::v1::Job* job) {
    qlorad::v1::GetJobRequest request;
    request.set_job_id(job_id_);
    grpc::ClientContext context;
    if (backoff_.lost()) {
      context.set_wait_for_ready(true);
      context.set_deadline(system_clock::now() + wait_);
    } else {
      SetUnaryDeadline(context);
    }
    interrupt_.Track(&context);
    grpc::Status status = ctx_.stub.GetJob(&context, request, job);
    interrupt_.Track(nullptr);
    // A wait that ran out is one more failed try, like UNAVAILABLE.
    if (backoff_.lost() && status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return {grpc::StatusCode::UNAVAILABLE,
              fmt::format("no answer within {:.1f}s", static_cast<double>(wait_.count()) / 1000)};
    }
    return status;
  }

  grpc::Status Stream(bool queued) {
    qlorad::v1::StreamMetricsRequest request;
    request.set_job_id(job_id_);
    request.set_from_step(cursor_.ResumeFrom());
    grpc::ClientContext context;
    if (queued) context.set_deadline(system_clock::now() + kQueuedRefresh);
    interrupt_.Track(&context);
    auto reader = ctx_.stub.StreamMetrics(&context, request);
    qlorad::v1::StepMetrics step;
    while (reader->Read(&step)) {
      if (!cursor_.IsNew(step)) continue;
      if (queued) {
        // The job started while this stream waited for it: its new state goes out before its
        // first step, as it would have had the next refresh come first. A short job may have
        // ended by now; it still ran, and its end has a line of its own (Finish).
        queued = false;
        qlorad::v1::Job job;
        if (GetJob(&job).ok()) {
          if (IsTerminal(job.state())) job.set_state(qlorad::v1::JOB_STATE_RUNNING);
          notes_.Job(job, NowUnixMs(), shown_step_);
        }
      }
      printer_.Print(step);
      shown_step_ = true;
    }
    grpc::Status status = reader->Finish();
    interrupt_.Track(nullptr);
    return status;
  }

  int Finish() {
    printer_.Finish();
    qlorad::v1::GetJobRequest get;
    get.set_job_id(job_id_);
    qlorad::v1::Job job;
    if (auto failed = CallUnary(ctx_, &qlorad::v1::JobService::StubInterface::GetJob, get, &job)) {
      return *failed;
    }
    if (ctx_.options.json) {
      ctx_.out << JsonLine("done", job) << "\n";
    } else {
      ctx_.out << FormatFinalState(job);
    }
    ctx_.out.flush();
    if (job.state() == qlorad::v1::JOB_STATE_COMPLETED) return kExitOk;
    if (!IsTerminal(job.state())) {
      return ReportError(ctx_.err, ctx_.options.json, "STREAM_ENDED",
                         "the metrics stream of " + job_id_ + " ended while the job is " +
                             JobStateName(job.state()),
                         kExitFailed);
    }
    return kExitFailed;
  }

  int Detach() {
    printer_.Finish();
    const std::string message = "stopped following " + job_id_ +
                                "; the job keeps running (qloractl cancel " + job_id_ +
                                " stops it)";
    if (ctx_.options.json) {
      // Not an error (the job is fine), but stderr stays JSON lines for a script that reads it.
      ctx_.err
          << nlohmann::json{{"type", "detached"}, {"job_id", job_id_}, {"message", message}}.dump()
          << "\n";
    } else {
      ctx_.err << message << "\n";
    }
    return kExitInterrupted;
  }

  int Fail(const grpc::Status& status) {
    printer_.Finish();
    return ReportRpcError(status, ctx_.options.server, ctx_.err, ctx_.options.json);
  }

  int GiveUp(const grpc::Status& status) {
    printer_.Finish();
    return ReportError(ctx_.err, ctx_.options.json, "UNAVAILABLE",
                       "gave up reconnecting to qlorad at " + ctx_.options.server + " after " +
                           std::to_string(ctx_.options.reconnect_timeout_s) +
                           "s (last error: " + status.error_message() +
                           "); the job may still be running (--reconnect-timeout " +
                           "waits longer)",
                       kExitUnreachable);
  }

  const CommandContext& ctx_;
  const std::string& job_id_;
  StepPrinter printer_;
  FollowNotes notes_;
  StepCursor cursor_;
  ReconnectBackoff backoff_;
  CancelOnInterrupt interrupt_;
  std::chrono::milliseconds wait_{0};
  bool connected_ = false;
  bool shown_step_ = false;
};

}  // namespace

int Watch(const CommandContext& ctx, const std::string& job_id, int64_t from_step) {
  return Follower(ctx, job_id, from_step).Run();
}

}  // namespace qlorad::cli
