// How a START order becomes a qlorad-train process: where its job spec is written and the exact
// command line and environment it runs with.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "common/path_sandbox.h"
#include "common/process/process_supervisor.h"
#include "common/status.h"
#include "qlorad/v1/workers.pb.h"

namespace qlorad::agent {

struct TrainerSetup {
  std::filesystem::path trainer;   // the qlorad-train executable
  std::filesystem::path work_dir;  // absolute; the trainer's cwd, job specs and outputs land here
  std::optional<int> gpu;          // nullopt: --cpu
  PathRoots roots;                 // where the spec's paths may point; empty refuses every path
};

// <work_dir>/jobs/<job_id>/attempt-<n>/job.yaml. The job id must be one path component.
StatusOr<std::filesystem::path> JobSpecPath(const std::filesystem::path& work_dir,
                                            const std::string& job_id, int attempt);

// Writes spec_yaml to JobSpecPath, creating the folders.
StatusOr<std::filesystem::path> WriteJobSpec(const TrainerSetup& setup,
                                             const v1::Assignment& start);

// The first path of the START's spec (or its resume_from) outside setup.roots, with symbolic
// links followed. A spec that does not parse passes: the trainer refuses it before it opens any
// file, naming the field.
std::optional<PathRefusal> RefusedPath(const TrainerSetup& setup, const v1::Assignment& start);

// `qlorad-train run <spec> --json --device cpu|cuda [--resume DIR] --rank R --world-size W
// [--rendezvous host:port]`, in work_dir, with CUDA_VISIBLE_DEVICES=N for a GPU agent.
process::SpawnSpec TrainerSpawnSpec(const TrainerSetup& setup, const v1::Assignment& start,
                                    const std::filesystem::path& spec_path);

}  // namespace qlorad::agent
