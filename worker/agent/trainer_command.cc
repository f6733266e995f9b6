#include "worker/agent/trainer_command.h"

#include <fstream>
#include <system_error>

namespace qlorad::agent {

StatusOr<std::filesystem::path> JobSpecPath(const std::filesystem::path& work_dir,
                                            const std::string& job_id, int attempt) {
  // The id comes over the network and becomes a folder name: it must not climb out of jobs/.
  if (job_id.empty() || job_id == "." || job_id == ".." ||
      job_id.find_first_of("/\\") != std::string::npos || job_id.find('\0') != std::string::npos) {
    return InvalidArgument("job_id: not usable as a folder name: '" + job_id + "'");
  }
  if (attempt < 0) return InvalidArgument("attempt: must be >= 0, got " + std::to_string(attempt));
  return work_dir / "jobs" / job_id / ("attempt-" + std::to_string(attempt)) / "job.yaml";
}

StatusOr<std::filesystem::path> WriteJobSpec(const TrainerSetup& setup,
                                             const v1::Assignment& start) {
  QLORAD_ASSIGN_OR_RETURN(std::filesystem::path path,
                          JobSpecPath(setup.work_dir, start.job_id(), start.attempt()));
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) return Internal(path.parent_path().string() + ": cannot create: " + ec.message());
  // Every rank's worker writes this file, and on a shared file system they write the same one:
  // each writes its own temporary file and renames it into place, so that no trainer ever reads a
  // spec another rank's worker is halfway through rewriting.
  std::filesystem::path tmp = path;
  tmp += ".rank-" + std::to_string(start.rank()) + ".tmp";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  out << start.spec_yaml();
  out.close();
  if (!out) return Internal(tmp.string() + ": cannot write the job spec");
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Internal(path.string() + ": cannot move the job spec into place: " + ec.message());
  return path;
}

std::optional<PathRefusal> RefusedPath(const TrainerSetup& setup, const v1::Assignment& start) {
  auto spec = ParseJobSpec(start.spec_yaml());
  if (!spec.ok()) return std::nullopt;
  return CheckSpecPaths(*spec, start.resume_from(), setup.roots, PathResolution::kFollowSymlinks);
}

process::SpawnSpec TrainerSpawnSpec(const TrainerSetup& setup, const v1::Assignment& start,
                                    const std::filesystem::path& spec_path) {
  process::SpawnSpec spec;
  spec.argv = {setup.trainer.string(),    "run", spec_path.string(), "--json", "--device",
               setup.gpu ? "cuda" : "cpu"};
  // Each attempt checkpoints into its own folder (qlorad-train run --help says more).
  spec.argv.insert(spec.argv.end(), {"--attempt", std::to_string(start.attempt())});
  if (!start.resume_from().empty()) {
    spec.argv.insert(spec.argv.end(), {"--resume", start.resume_from()});
  }
  // world_size 0 is proto3 for "not set": a single-rank job.
  spec.argv.insert(spec.argv.end(), {"--rank", std::to_string(start.rank()), "--world-size",
                                     std::to_string(std::max(1, start.world_size()))});
  if (!start.rendezvous().empty()) {
    spec.argv.insert(spec.argv.end(), {"--rendezvous", start.rendezvous()});
  }
  if (setup.gpu) spec.extra_env.push_back("CUDA_VISIBLE_DEVICES=" + std::to_string(*setup.gpu));
  spec.cwd = setup.work_dir.string();
  return spec;
}

}  // namespace qlorad::agent
