// The JSON of the dashboard's HTTP API (/api/jobs, /api/jobs/ID, /api/workers) and of its event
// streams. The HTML pages are in dashboard_pages.h; what they show is read in dashboard_data.h.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qlorad/v1/common.pb.h"
#include "server/coordinator.h"

namespace qlorad::server {

using LossCurve = std::vector<std::pair<int64_t, double>>;

// Keeps at most max_points, evenly spread, always including the first and the last.
template <typename T>
std::vector<T> Thin(const std::vector<T>& items, size_t max_points) {
  if (items.size() <= max_points || max_points < 2) return items;
  std::vector<T> out;
  const double stride = static_cast<double>(items.size() - 1) / static_cast<double>(max_points - 1);
  for (size_t i = 0; i < max_points; ++i) {
    out.push_back(items[static_cast<size_t>(static_cast<double>(i) * stride + 0.5)]);
  }
  out.back() = items.back();
  return out;
}

inline LossCurve Downsample(const LossCurve& curve, size_t max_points) {
  return Thin(curve, max_points);
}

struct JobCurves {
  LossCurve loss;       // training loss per step (rank 0)
  LossCurve eval_loss;  // eval loss per evaluated step; empty without data.validation
};

// A job as the dashboard lists it: its record and, while it runs, the seconds it has left.
struct JobRow {
  v1::Job job;
  std::optional<double> eta_s;
};

// Steps the ETA averages over: recent enough to follow a change of speed, long enough to
// smooth one slow step (an evaluation, a checkpoint).
inline constexpr int64_t kEtaWindowSteps = 20;

// Seconds left until total_steps at the pace of rank 0's last kEtaWindowSteps steps of
// `attempt` among `recent` (any order, any rank or attempt); nothing before two such steps.
std::optional<double> EstimateSecondsLeft(const std::vector<v1::StepMetrics>& recent, int attempt,
                                          int64_t total_steps);

// {"id","name","state","attempt","restarts","max_restarts","priority","gpus","step",
//  "total_steps","loss","error","worker_id","created_unix_ms","started_unix_ms",
//  "finished_unix_ms","adapter_path","best":{"step","eval_loss","checkpoint_path",
//  "adapter_path"} or null,"stopped_early","eta_s": seconds or null}
nlohmann::json JobJson(const JobRow& row);

// {"jobs":[JobJson + "loss_curve":[[step,loss],...],"eval_loss_curve":[[step,eval_loss],...],
//          "eval_loss": the last one or null]}: what /api/jobs has served since the first
// dashboard, with the fields of JobJson added.
nlohmann::json JobsJson(const std::vector<JobRow>& jobs,
                        const std::map<std::string, JobCurves>& curves);

// Step metrics as a table: {"columns":["rank","attempt","step","loss","lr","grad_norm",
// "tokens_per_s","vram_allocated_bytes","vram_reserved_bytes","vram_peak_bytes","wall_time_s",
// "eval_loss","eval_accuracy"],"rows":[[...],...]}, eval_loss null on steps that were not
// evaluated, eval_accuracy also on those of jobs that are not task: classification.
nlohmann::json MetricsJson(const std::vector<v1::StepMetrics>& rows);

// What kind of event a log line reports, for the job page's event list: "checkpoint",
// "restart" (a retry or a requeue), "oom", "eval", "state" (submitted, assigned, started,
// finished), or "" for a plain log line.
std::string EventKind(const v1::LogLine& line);

// {"seq","unix_ms","level","source","rank","message","kind"}
nlohmann::json LogLineJson(const v1::LogLine& line);

// {"workers":[{"id","name","hostname","devices":[{"kind","index","name","total_memory_bytes",
//              "free_memory_bytes"}],"running":[{"job_id","attempt","rank"}],"heartbeat_age_ms"}]},
// free_memory_bytes only where the worker measured it (a GPU, while idle).
nlohmann::json WorkersJson(const std::vector<WorkerView>& workers);

// JSON that may sit inside an HTML <script> element: "</" cannot close it.
std::string ScriptSafeJson(const nlohmann::json& value);

}  // namespace qlorad::server
