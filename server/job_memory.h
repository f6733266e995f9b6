// The GPU memory a queued job needs on each of its workers, for the scheduler: the trainer's own
// memory estimate (common/memory_estimate.h) from the model's config.json, when the coordinator
// can read it.
//
// Why only then: model.path resolves against the working directory of the process that runs the
// trainer, the worker's --work-dir, which the coordinator may not share. An absolute path that
// the coordinator can read is taken to be the same model the workers read (a shared file
// system, as multi-host jobs need anyway for their checkpoints); a relative path, or one the
// coordinator cannot read, is not guessed at: the job is placed without a memory check, and the
// trainer checks its estimate on the worker before loading anything, refusing a job that does
// not fit with the same numbers (train/memory_check.h).
#pragma once

#include <cstdint>
#include <string>

namespace qlorad::server {

struct JobMemoryNeed {
  int64_t gpu_memory_bytes = 0;  // 0: not checked
  std::string note;              // for the job's log; empty when there is nothing to say
};

// Auto activation options are taken as on: the leanest the spec allows, since the trainer's auto
// turns them on when the device needs it. A CPU job, or one with
// resources.ignore_memory_estimate, is not checked.
JobMemoryNeed GpuMemoryNeedOf(const std::string& spec_yaml);

}  // namespace qlorad::server
