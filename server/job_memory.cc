#include "server/job_memory.h"

#include "common/jobspec.h"
#include "common/memory_estimate.h"
#include "common/model_shape.h"

namespace qlorad::server {

JobMemoryNeed GpuMemoryNeedOf(const std::string& spec_yaml) {
  const StatusOr<JobSpec> spec = ParseJobSpec(spec_yaml);
  if (!spec.ok() || spec->resources.device == DeviceChoice::kCpu) return {};
  if (spec->resources.ignore_memory_estimate) {
    return {0, "memory estimate: not checked (resources.ignore_memory_estimate)"};
  }
  const std::string& path = spec->model.path;
  const std::string trainer_checks = "; the trainer checks the estimate on its worker";
  if (path.empty() || path[0] != '/') {
    return {0, "memory estimate: not made by the coordinator: model.path " + path +
                   " is relative, so it resolves against each worker's --work-dir" +
                   trainer_checks};
  }
  const StatusOr<ModelShape> shape = ReadModelShape(path);
  if (!shape.ok()) {
    return {0, "memory estimate: not made by the coordinator: " + shape.status().message() +
                   trainer_checks};
  }
  const MemoryJob job = MemoryJobOf(*spec, *shape);
  const MemoryEstimate e = EstimateMemory(job);
  const int64_t need = DeviceBytesNeeded(e.peak);
  return {need, "memory estimate: " + FormatMemory(e.peak) + " at the peak per rank (activation " +
                    "checkpointing " + (job.checkpointing ? "on" : "off") + ", offload " +
                    (job.offload ? "on" : "off") +
                    ": the leanest the spec allows); placed only on GPU workers of at least " +
                    FormatMemory(need) + " (the peak / 0.9, plus the CUDA context)"};
}

}  // namespace qlorad::server
