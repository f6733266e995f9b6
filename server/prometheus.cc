#include "server/prometheus.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "server/store.h"

namespace qlorad::server {
namespace {

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

void Header(std::string& out, const char* name, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n", name, help, name);
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
  Header(out, "qlorad_jobs", "Jobs in the store by state.");
  for (int s = v1::JOB_STATE_QUEUED; s <= v1::JOB_STATE_CANCELLED; ++s) {
    const auto state = static_cast<v1::JobState>(s);
    auto it = snapshot.jobs_by_state.find(state);
    out += fmt::format("qlorad_jobs{{state=\"{}\"}} {}\n", LowerStateName(state),
                       it == snapshot.jobs_by_state.end() ? 0 : it->second);
  }
  Header(out, "qlorad_workers", "Registered workers, idle or running a job.");
  out += fmt::format("qlorad_workers{{state=\"idle\"}} {}\n",
                     snapshot.workers_online - snapshot.workers_busy);
  out += fmt::format("qlorad_workers{{state=\"busy\"}} {}\n", snapshot.workers_busy);

  struct Series {
    const char* name;
    const char* help;
    double (*value)(const v1::StepMetrics&);
    const std::map<std::string, v1::StepMetrics>* rows;
  };
  const Series series[] = {
      {"qlorad_job_step", "Last optimizer step reported (rank 0).",
       [](const v1::StepMetrics& m) { return static_cast<double>(m.step()); },
       &snapshot.latest_metrics},
      {"qlorad_job_loss", "Last training loss reported (rank 0).",
       [](const v1::StepMetrics& m) { return m.loss(); }, &snapshot.latest_metrics},
      {"qlorad_job_tokens_per_second", "Training throughput at the last step (rank 0).",
       [](const v1::StepMetrics& m) { return m.tokens_per_s(); }, &snapshot.latest_metrics},
      {"qlorad_job_eval_loss", "Last eval loss on the validation set (data.validation).",
       [](const v1::StepMetrics& m) { return m.eval_loss(); }, &snapshot.latest_eval},
      {"qlorad_job_eval_perplexity", "Perplexity of the last evaluation, exp(eval loss).",
       [](const v1::StepMetrics& m) { return m.eval_perplexity(); }, &snapshot.latest_eval},
  };
  for (const Series& s : series) {
    Header(out, s.name, s.help);
    for (const v1::Job& job : snapshot.jobs) {
      auto m = s.rows->find(job.id());
      if (m == s.rows->end()) continue;
      out += fmt::format("{}{{job=\"{}\",name=\"{}\"}} {}\n", s.name, EscapeLabel(job.id()),
                         EscapeLabel(job.name()), SampleValue(s.value(m->second)));
    }
  }
  return out;
}

}  // namespace qlorad::server
