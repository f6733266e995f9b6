// The Prometheus text exposition of the coordinator (format 0.0.4).
//
// Service-wide: jobs in the store by state, workers idle and busy, streams following jobs
// (metrics and logs), counters since this coordinator started (jobs submitted and finished by
// state, attempts requeued, steps, an estimate of tokens), and per worker its device memory
// (total, and a GPU's free memory where measured) and heartbeat age, labelled with the worker's
// name. Per job, only jobs running now or finished less than two minutes ago
// (CoordinatorOptions::finished_series_ttl): the last step, loss, lr, grad norm, eval loss and
// perplexity (rank 0; labels job and name), and per rank tokens/s and VRAM allocated, reserved
// and peak (labels job, name, rank and worker). A finished job's series disappear after that,
// so a long-lived coordinator does not export every job it ever ran.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qlorad/v1/common.pb.h"
#include "server/coordinator.h"

namespace qlorad::server {

struct PrometheusSnapshot {
  std::map<v1::JobState, int64_t> jobs_by_state;
  std::vector<WorkerView> workers;
  int workers_busy = 0;
  ServiceCounters counters;
  std::vector<JobSeries> jobs;
  // Streams following a job's metrics or logs now (gRPC and the dashboard's event streams).
  int64_t metric_subscribers = 0;
  int64_t log_subscribers = 0;
};

std::string RenderPrometheus(const PrometheusSnapshot& snapshot);

// Escapes a label value as the exposition format requires (backslash, quote, newline).
std::string EscapeLabel(const std::string& value);

}  // namespace qlorad::server
