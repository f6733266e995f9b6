// workers: one unary call.
#include "client/cli/commands.h"
#include "client/cli/exit_codes.h"
#include "client/cli/json_output.h"
#include "client/cli/rpc.h"
#include "client/cli/worker_text.h"

namespace qlorad::cli {

int ListWorkers(const CommandContext& ctx) {
  qlorad::v1::ListWorkersRequest request;
  qlorad::v1::ListWorkersResponse response;
  if (auto failed =
          CallUnary(ctx, &qlorad::v1::JobService::StubInterface::ListWorkers, request, &response)) {
    return *failed;
  }
  if (!ctx.options.json) {
    ctx.out << FormatWorkerTable({response.workers().begin(), response.workers().end()});
    return kExitOk;
  }
  for (const auto& worker : response.workers()) ctx.out << JsonLine("worker", worker) << "\n";
  return kExitOk;
}

}  // namespace qlorad::cli
