#include "server/job_validation.h"

#include <fmt/format.h>

#include "common/jobspec.h"
#include "server/ids.h"

namespace qlorad::server {

StatusOr<JobRecord> NewJobFromSpec(const std::string& spec_yaml, int64_t now_unix_ms,
                                   size_t max_spec_bytes, JobSpec* parsed) {
  if (spec_yaml.empty()) return InvalidArgument("spec_yaml: empty spec");
  if (spec_yaml.size() > max_spec_bytes) {
    return InvalidArgument(
        fmt::format("spec_yaml: the spec is {} bytes, over the coordinator's limit of {} bytes "
                    "(qlorad --max-spec-bytes)",
                    spec_yaml.size(), max_spec_bytes));
  }
  QLORAD_ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpec(spec_yaml));
  JobRecord record;
  v1::Job& job = record.job;
  job.set_id(RandomId("job-"));
  job.set_name(spec.name);
  job.set_state(v1::JOB_STATE_QUEUED);
  job.set_spec_yaml(spec_yaml);
  job.set_priority(spec.scheduling.priority);
  job.set_max_restarts(spec.scheduling.max_restarts);
  job.set_total_steps(spec.train.max_steps);
  job.set_gpus(spec.resources.gpus);
  job.set_created_unix_ms(now_unix_ms);
  if (parsed != nullptr) *parsed = std::move(spec);
  return record;
}

Status CheckPathsOnWorkers(const JobSpec& spec, const std::vector<WorkerRoots>& workers) {
  std::optional<PathRefusal> first;
  std::string first_worker;
  for (const auto& [name, roots] : workers) {
    auto refused = CheckSpecPaths(spec, "", roots, PathResolution::kWrittenOnly);
    if (!refused) return Status::Ok();
    if (!first) {
      first = std::move(refused);
      first_worker = name;
    }
  }
  if (!first) return Status::Ok();
  std::string message = first->message + " (worker " + first_worker;
  if (workers.size() > 1) {
    message += fmt::format("; {} other worker(s) refuse it too", workers.size() - 1);
  }
  return InvalidArgument(message + ")");
}

}  // namespace qlorad::server
