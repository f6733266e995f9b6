#include "client/cli/worker_text.h"

#include <fmt/format.h>

#include "client/cli/text_table.h"
#include "client/cli/units.h"

namespace qlorad::cli {
namespace {

std::string JobText(const qlorad::v1::WorkerInfo& w) {
  if (!w.job_id().empty()) {
    // Rank -1: a trainer the worker runs that is not its to run, which it is stopping.
    return w.rank() >= 0 ? fmt::format("{} rank {}", w.job_id(), w.rank())
                         : fmt::format("{} (stopping)", w.job_id());
  }
  // Busy without a job id: the coordinator names the job to its owner and to admins only.
  return w.state() == qlorad::v1::WORKER_STATE_BUSY ? "another user's" : "-";
}

std::string DevicesText(const qlorad::v1::WorkerInfo& w) {
  std::string out;
  for (const auto& d : w.devices()) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{}:{} {}", d.kind(), d.index(), d.name());
    if (d.has_free_memory_bytes() && d.total_memory_bytes() > 0) {
      // Measured by the worker while it runs no trainer: what the scheduler places jobs by.
      out += fmt::format(" {} free of {}", FormatBytes(d.free_memory_bytes()),
                         FormatBytes(d.total_memory_bytes()));
    } else if (d.total_memory_bytes() > 0) {
      out += " " + FormatBytes(d.total_memory_bytes());
    }
  }
  return out.empty() ? "-" : out;
}

std::string HeartbeatText(const qlorad::v1::WorkerInfo& w) {
  if (!w.has_heartbeat_age_ms()) return "-";
  return fmt::format("{:.1f}s ago", static_cast<double>(w.heartbeat_age_ms()) / 1000.0);
}

}  // namespace

std::string WorkerStateName(qlorad::v1::WorkerState state) {
  constexpr std::string_view kPrefix = "WORKER_STATE_";
  std::string name = qlorad::v1::WorkerState_Name(state);
  if (!name.starts_with(kPrefix)) return fmt::format("STATE_{}", static_cast<int>(state));
  return name.substr(kPrefix.size());
}

std::string FormatWorkerTable(const std::vector<qlorad::v1::WorkerInfo>& workers) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "STATE", "JOB", "DEVICES", "HOST", "HEARTBEAT"}};
  for (const auto& w : workers) {
    rows.push_back({w.name(), WorkerStateName(w.state()), JobText(w), DevicesText(w),
                    w.hostname().empty() ? "-" : w.hostname(), HeartbeatText(w)});
  }
  return FormatTable(rows);
}

}  // namespace qlorad::cli
