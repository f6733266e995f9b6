#include "server/prometheus.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <utility>

#include "server/store.h"

namespace qlorad::server {
namespace {

using Labels = std::vector<std::pair<std::string, std::string>>;

std::string LowerStateName(v1::JobState state) {
  std::string name = JobStateName(state);
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return name;
}

// The exposition format spells non-finite samples NaN, +Inf and -Inf (a diverged loss is NaN).
std::string SampleValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

// One metric family: its HELP and TYPE lines, then samples.
class Family {
 public:
  Family(std::string& out, const char* name, const char* type, const char* help)
      : out_(out), name_(name) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }

  void Sample(const Labels& labels, double value) {
    out_ += name_;
    if (!labels.empty()) {
      out_ += '{';
      for (size_t i = 0; i < labels.size(); ++i) {
        if (i > 0) out_ += ',';
        out_ += fmt::format("{}=\"{}\"", labels[i].first, EscapeLabel(labels[i].second));
      }
      out_ += '}';
    }
    out_ += " " + SampleValue(value) + "\n";
  }

 private:
  std::string& out_;
  const char* name_;
};

Labels JobLabels(const JobSeries& job) {
  return {{"job", job.job_id}, {"name", job.name}};
}

Labels RankLabels(const JobSeries& job, int rank) {
  auto worker = job.workers.find(rank);
  return {{"job", job.job_id},
          {"name", job.name},
          {"rank", std::to_string(rank)},
          {"worker", worker == job.workers.end() ? "" : worker->second}};
}

void ServiceFamilies(std::string& out, const PrometheusSnapshot& s) {
  Family jobs(out, "qlorad_jobs", "gauge", "Jobs in the store by state.");
  for (int state = v1::JOB_STATE_QUEUED; state <= v1::JOB_STATE_CANCELLED; ++state) {
    auto it = s.jobs_by_state.find(static_cast<v1::JobState>(state));
    jobs.Sample({{"state", LowerStateName(static_cast<v1::JobState>(state))}},
                static_cast<double>(it == s.jobs_by_state.end() ? 0 : it->second));
  }
  Family workers(out, "qlorad_workers", "gauge", "Registered workers, idle or running a job.");
  workers.Sample({{"state", "idle"}},
                 static_cast<double>(static_cast<int>(s.workers.size()) - s.workers_busy));
  workers.Sample({{"state", "busy"}}, s.workers_busy);
  Family subscribers(out, "qlorad_stream_subscribers", "gauge",
                     "Streams following a job now (gRPC and dashboard), by what they follow.");
  subscribers.Sample({{"stream", "metrics"}}, static_cast<double>(s.metric_subscribers));
  subscribers.Sample({{"stream", "logs"}}, static_cast<double>(s.log_subscribers));

  const ServiceCounters& c = s.counters;
  Family submitted(out, "qlorad_jobs_submitted_total", "counter",
                   "Jobs accepted since this coordinator started.");
  submitted.Sample({}, static_cast<double>(c.jobs_submitted));
  Family finished(out, "qlorad_jobs_finished_total", "counter",
                  "Jobs that ended since this coordinator started, by final state.");
  for (v1::JobState state :
       {v1::JOB_STATE_COMPLETED, v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    auto it = c.jobs_finished.find(state);
    finished.Sample({{"state", LowerStateName(state)}},
                    static_cast<double>(it == c.jobs_finished.end() ? 0 : it->second));
  }
  Family requeued(out, "qlorad_attempts_requeued_total", "counter",
                  "Attempts that ended early and were queued again (retries and lost workers).");
  requeued.Sample({}, static_cast<double>(c.attempts_requeued));
  Family steps(out, "qlorad_steps_total", "counter",
               "Optimizer steps reported (rank 0), steps a retry repeats included.");
  steps.Sample({}, static_cast<double>(c.steps));
  Family tokens(out, "qlorad_tokens_total", "counter",
                "Tokens trained on all ranks, estimated from each step's tokens/s and the time "
                "since the rank's previous step (an attempt's first step is left out).");
  tokens.Sample({}, c.tokens);
}

void WorkerFamilies(std::string& out, const PrometheusSnapshot& s) {
  Family memory(out, "qlorad_worker_device_memory_bytes", "gauge",
                "Total memory of each worker's device (0 for a CPU).");
  for (const WorkerView& w : s.workers) {
    for (const auto& d : w.devices) {
      memory.Sample({{"worker", w.name},
                     {"device", fmt::format("{}:{}", d.kind(), d.index())},
                     {"device_name", d.name()}},
                    static_cast<double>(d.total_memory_bytes()));
    }
  }
  Family free_memory(out, "qlorad_worker_device_free_memory_bytes", "gauge",
                     "Free memory of each worker's GPU, measured while the worker ran no trainer "
                     "(absent where not measured: a CPU, an older worker).");
  for (const WorkerView& w : s.workers) {
    for (const auto& d : w.devices) {
      if (!d.has_free_memory_bytes()) continue;
      free_memory.Sample({{"worker", w.name},
                          {"device", fmt::format("{}:{}", d.kind(), d.index())},
                          {"device_name", d.name()}},
                         static_cast<double>(d.free_memory_bytes()));
    }
  }
  Family age(out, "qlorad_worker_heartbeat_age_seconds", "gauge",
             "Seconds since each worker's last heartbeat or report.");
  for (const WorkerView& w : s.workers) {
    age.Sample({{"worker", w.name}}, static_cast<double>(w.heartbeat_age_ms) / 1000.0);
  }
  Family running(out, "qlorad_worker_running_ranks", "gauge",
                 "Trainer ranks each worker runs now.");
  for (const WorkerView& w : s.workers) {
    running.Sample({{"worker", w.name}}, static_cast<double>(w.running.size()));
  }
}

// A gauge read from a step's metrics.
struct StepGauge {
  const char* name;
  const char* help;
  double (*value)(const v1::StepMetrics&);
};

void JobFamilies(std::string& out, const PrometheusSnapshot& s) {
  const StepGauge rank_zero[] = {
      {"qlorad_job_step", "Last optimizer step reported (rank 0).",
       [](const v1::StepMetrics& m) { return static_cast<double>(m.step()); }},
      {"qlorad_job_total_steps", "Steps the job runs to.",
       [](const v1::StepMetrics& m) { return static_cast<double>(m.total_steps()); }},
      {"qlorad_job_loss", "Last training loss reported (rank 0).",
       [](const v1::StepMetrics& m) { return m.loss(); }},
      {"qlorad_job_learning_rate", "Learning rate of the last step (rank 0).",
       [](const v1::StepMetrics& m) { return m.lr(); }},
      {"qlorad_job_grad_norm", "Gradient norm of the last step, before clipping (rank 0).",
       [](const v1::StepMetrics& m) { return m.grad_norm(); }},
      {"qlorad_job_tokens_per_second", "Training throughput at the last step (rank 0).",
       [](const v1::StepMetrics& m) { return m.tokens_per_s(); }},
  };
  for (const StepGauge& family : rank_zero) {
    Family f(out, family.name, "gauge", family.help);
    for (const JobSeries& job : s.jobs) {
      auto m = job.latest.find(0);
      if (m != job.latest.end()) f.Sample(JobLabels(job), family.value(m->second));
    }
  }
  Family restarts(out, "qlorad_job_restarts_total", "counter",
                  "Times the job was started again (a failed attempt retried, a lost worker's "
                  "job requeued), as of its newest attempt to report a step.");
  for (const JobSeries& job : s.jobs) restarts.Sample(JobLabels(job), job.attempt);
  Family eval(out, "qlorad_job_eval_loss", "gauge",
              "Last eval loss on the validation set (data.validation).");
  for (const JobSeries& job : s.jobs) {
    if (job.last_eval) eval.Sample(JobLabels(job), job.last_eval->eval_loss());
  }
  Family perplexity(out, "qlorad_job_eval_perplexity", "gauge",
                    "Perplexity of the last evaluation, exp(eval loss).");
  for (const JobSeries& job : s.jobs) {
    if (job.last_eval) perplexity.Sample(JobLabels(job), job.last_eval->eval_perplexity());
  }
  Family accuracy(out, "qlorad_job_eval_accuracy", "gauge",
                  "Accuracy of the last evaluation (task: classification).");
  for (const JobSeries& job : s.jobs) {
    if (job.last_eval && job.last_eval->has_eval_accuracy()) {
      accuracy.Sample(JobLabels(job), job.last_eval->eval_accuracy());
    }
  }

  const StepGauge per_rank[] = {
      {"qlorad_job_rank_tokens_per_second", "Throughput of each rank at its last step.",
       [](const v1::StepMetrics& m) { return m.tokens_per_s(); }},
      {"qlorad_job_vram_allocated_bytes", "GPU memory allocated by each rank at its last step.",
       [](const v1::StepMetrics& m) { return static_cast<double>(m.vram_allocated_bytes()); }},
      {"qlorad_job_vram_reserved_bytes", "GPU memory reserved by each rank's allocator.",
       [](const v1::StepMetrics& m) { return static_cast<double>(m.vram_reserved_bytes()); }},
      {"qlorad_job_vram_peak_bytes", "Peak GPU memory allocated by each rank so far.",
       [](const v1::StepMetrics& m) { return static_cast<double>(m.vram_peak_bytes()); }},
  };
  for (const StepGauge& family : per_rank) {
    Family f(out, family.name, "gauge", family.help);
    for (const JobSeries& job : s.jobs) {
      for (const auto& [rank, m] : job.latest) f.Sample(RankLabels(job, rank), family.value(m));
    }
  }
}

}  // namespace

std::string EscapeLabel(const std::string& value) {
  std::string escaped;
  for (char c : value) {
    if (c == '\\')
      escaped += "\\\\";
    else if (c == '"')
      escaped += "\\\"";
    else if (c == '\n')
      escaped += "\\n";
    else
      escaped += c;
  }
  return escaped;
}

std::string RenderPrometheus(const PrometheusSnapshot& snapshot) {
  std::string out;
  ServiceFamilies(out, snapshot);
  WorkerFamilies(out, snapshot);
  JobFamilies(out, snapshot);
  return out;
}

}  // namespace qlorad::server
