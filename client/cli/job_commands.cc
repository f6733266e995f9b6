// submit, jobs, status, cancel, retry: one unary call each.
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "client/cli/commands.h"
#include "client/cli/errors.h"
#include "client/cli/exit_codes.h"
#include "client/cli/job_pages.h"
#include "client/cli/job_text.h"
#include "client/cli/json_output.h"
#include "client/cli/rpc.h"

namespace qlorad::cli {
namespace {

using Stub = qlorad::v1::JobService::StubInterface;

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Reads the whole spec file, or says which file could not be read and why.
std::optional<std::string> ReadSpecFile(const CommandContext& ctx) {
  const std::string& path = ctx.options.spec_file;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    ReportError(ctx.err, ctx.options.json, "USAGE", "job spec file '" + path + "' is a directory",
                kExitUsage);
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ReportError(ctx.err, ctx.options.json, "USAGE",
                "cannot read job spec file '" + path + "': " + std::strerror(errno), kExitUsage);
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The detailed text form, or one JSON line.
void PrintJob(const CommandContext& ctx, const qlorad::v1::Job& job) {
  if (ctx.options.json) {
    ctx.out << JsonLine("job", job) << "\n";
  } else {
    ctx.out << FormatJobDetails(job, NowUnixMs());
  }
}

}  // namespace

int Submit(const CommandContext& ctx) {
  const auto spec = ReadSpecFile(ctx);
  if (!spec) return kExitUsage;
  qlorad::v1::SubmitJobRequest request;
  request.set_spec_yaml(*spec);
  qlorad::v1::Job job;
  if (auto failed = CallUnary(ctx, &Stub::SubmitJob, request, &job)) return *failed;
  if (ctx.options.json) {
    ctx.out << JsonLine("job", job) << "\n";
  } else {
    ctx.out << "submitted " << job.id() << " (" << job.name() << ")\n";
  }
  ctx.out.flush();
  if (!ctx.options.follow) return kExitOk;
  return Watch(ctx, job.id(), 0);
}

int ListJobs(const CommandContext& ctx) {
  qlorad::v1::ListJobsRequest request;
  for (const auto& name : ctx.options.states) {
    // Names were checked by the argument parser, so this always finds the state.
    if (auto state = ParseJobState(name)) request.add_states(*state);
  }
  auto fetch = [&](const qlorad::v1::ListJobsRequest& page_request,
                   qlorad::v1::ListJobsResponse* page) {
    grpc::ClientContext context;
    SetUnaryDeadline(context);
    return ctx.stub.ListJobs(&context, page_request, page);
  };
  // JSON lines go out as pages arrive; the table needs every row first for its column widths.
  std::vector<qlorad::v1::Job> jobs;
  const grpc::Status status =
      WalkJobPages(request, ctx.options.limit, fetch, [&](const qlorad::v1::Job& job) {
        if (ctx.options.json) {
          ctx.out << JsonLine("job", job) << "\n";
        } else {
          jobs.push_back(job);
        }
      });
  if (!status.ok()) return ReportRpcError(status, ctx.options.server, ctx.err, ctx.options.json);
  if (!ctx.options.json) ctx.out << FormatJobTable(jobs, NowUnixMs());
  return kExitOk;
}

int ShowStatus(const CommandContext& ctx) {
  qlorad::v1::GetJobRequest request;
  request.set_job_id(ctx.options.job_id);
  qlorad::v1::Job job;
  if (auto failed = CallUnary(ctx, &Stub::GetJob, request, &job)) return *failed;
  PrintJob(ctx, job);
  return kExitOk;
}

int Cancel(const CommandContext& ctx) {
  qlorad::v1::CancelJobRequest request;
  request.set_job_id(ctx.options.job_id);
  qlorad::v1::Job job;
  if (auto failed = CallUnary(ctx, &Stub::CancelJob, request, &job)) return *failed;
  if (ctx.options.json) {
    ctx.out << JsonLine("job", job) << "\n";
  } else if (job.state() == qlorad::v1::JOB_STATE_CANCELLED) {
    ctx.out << "cancelled " << job.id() << "\n";
  } else {
    // A running job is stopped by its worker (SIGTERM, then SIGKILL), which takes a moment.
    ctx.out << "cancelling " << job.id() << " (now " << JobStateName(job.state())
            << "; `qloractl watch " << job.id() << "` shows when it has stopped)\n";
  }
  return kExitOk;
}

int Retry(const CommandContext& ctx) {
  qlorad::v1::RetryJobRequest request;
  request.set_job_id(ctx.options.job_id);
  request.set_from_scratch(ctx.options.from_scratch);
  qlorad::v1::Job job;
  if (auto failed = CallUnary(ctx, &Stub::RetryJob, request, &job)) return *failed;
  if (ctx.options.json) {
    ctx.out << JsonLine("job", job) << "\n";
  } else {
    // Where it resumes is in the new job's first log line; the Job message does not carry it.
    ctx.out << "submitted " << job.id() << " (" << job.name() << "), a retry of " << job.retry_of()
            << (ctx.options.from_scratch ? ", from step 0" : "") << "\n";
  }
  ctx.out.flush();
  if (!ctx.options.follow) return kExitOk;
  return Watch(ctx, job.id(), 0);
}

}  // namespace qlorad::cli
