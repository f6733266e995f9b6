// The Prometheus text exposition of the coordinator: jobs by state, workers, and per job the
// last step, loss and tokens/s, and the last eval loss and perplexity (data.validation).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qlorad/v1/common.pb.h"

namespace qlorad::server {

struct PrometheusSnapshot {
  std::map<v1::JobState, int64_t> jobs_by_state;
  int workers_online = 0;
  int workers_busy = 0;
  std::vector<v1::Job> jobs;                              // those to export per-job series
  std::map<std::string, v1::StepMetrics> latest_metrics;  // by job id, rank 0
  std::map<std::string, v1::StepMetrics> latest_eval;     // by job id, rank 0's evaluated steps
};

std::string RenderPrometheus(const PrometheusSnapshot& snapshot);

// Escapes a label value as the exposition format requires (backslash, quote, newline).
std::string EscapeLabel(const std::string& value);

}  // namespace qlorad::server
