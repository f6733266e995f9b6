#include "worker/trainer/train/resume_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "worker/trainer/io/file_util.h"
#include "worker/trainer/io/json_file.h"
#include "worker/trainer/model/adapter.h"
#include "worker/trainer/train/resume_checkpoint_shards.h"

namespace qlorad::trainer {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// best_loss is null until an evaluation was finite (JSON has no infinity).
json EvalProgressJson(const EvalProgress& p) {
  return {{"best_step", p.best_step},
          {"best_loss", std::isfinite(p.best_loss) ? json(p.best_loss) : json(nullptr)},
          {"best_checkpoint", p.best_checkpoint},
          {"evals_without_improvement", p.evals_without_improvement}};
}

EvalProgress EvalProgressFromJson(const json& j) {
  EvalProgress p;
  p.best_step = j.at("best_step").get<int64_t>();
  if (!j.at("best_loss").is_null()) p.best_loss = j.at("best_loss").get<double>();
  p.best_checkpoint = j.at("best_checkpoint").get<std::string>();
  p.evals_without_improvement = j.at("evals_without_improvement").get<int64_t>();
  return p;
}

constexpr const char* kStepPrefix = "step-";

// Step number of a "step-N" directory name, or -1.
int64_t StepOf(const fs::path& dir) {
  const std::string name = dir.filename().string();
  if (name.rfind(kStepPrefix, 0) != 0) return -1;
  const std::string digits = name.substr(std::string(kStepPrefix).size());
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

// step-N directories under `dir`, oldest first.
std::vector<fs::path> StepDirs(const fs::path& dir) {
  std::vector<fs::path> dirs;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_directory() && StepOf(entry.path()) >= 0) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end(),
            [](const fs::path& a, const fs::path& b) { return StepOf(a) < StepOf(b); });
  return dirs;
}

// state.json is written last, inside the temporary folder that is renamed into place, so a
// step-N with it is whole.
bool IsComplete(const fs::path& step_dir) {
  std::error_code ec;
  return fs::is_regular_file(step_dir / "state.json", ec);
}

// Every complete step-N that `dir` is or holds: itself, its children, those of checkpoints/,
// and those of the attempt-A folders in either.
std::vector<fs::path> CompleteCheckpoints(const fs::path& dir) {
  std::vector<fs::path> found;
  if (StepOf(dir) >= 0 && IsComplete(dir)) found.push_back(dir);
  for (const fs::path& parent : {dir, dir / "checkpoints"}) {
    std::vector<fs::path> folders = {parent};
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(parent, ec)) {
      if (entry.is_directory() && entry.path().filename().string().rfind("attempt-", 0) == 0) {
        folders.push_back(entry.path());
      }
    }
    for (const fs::path& folder : folders) {
      for (const fs::path& step : StepDirs(folder)) {
        if (IsComplete(step)) found.push_back(step);
      }
    }
  }
  return found;
}

}  // namespace

uint64_t StepSeed(uint64_t seed, int64_t step) {
  return seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(step) + 1;
}

Status SaveAdapterFromRanks(parallel::DataParallel& parallel, const JobSpec& spec,
                            const std::string& dir) {
  std::vector<std::pair<std::string, at::Tensor>> adapter;
  QLORAD_RETURN_IF_ERROR(parallel.ForEachAdapterTensor(
      [&](const std::string& module, bool lora_a, const at::Tensor& value) {
        adapter.emplace_back(AdapterKey(module, lora_a), value.to(at::kFloat));
        return Status::Ok();
      }));
  for (const auto& [module, weight] : parallel.WholeParameters()) {  // modules_to_save
    adapter.emplace_back(WholeModuleKey(module), weight.detach().to(at::kCPU, at::kFloat));
  }
  if (parallel.comm().rank() != 0) return Status::Ok();
  return SaveAdapterTensors(adapter, spec, dir);
}

StatusOr<std::string> SaveResumeCheckpoint(const std::string& checkpoints_dir,
                                           parallel::DataParallel& parallel,
                                           torch::optim::Optimizer& optimizer, const JobSpec& spec,
                                           const ResumeState& state, int keep) {
  parallel::Communicator& comm = parallel.comm();
  const bool rank0 = comm.rank() == 0;
  const fs::path root = fs::absolute(checkpoints_dir);
  const fs::path final_dir = root / (kStepPrefix + std::to_string(state.step));
  const fs::path tmp_dir = root / ("." + final_dir.filename().string() + ".tmp");
  if (rank0) {
    std::error_code ec;
    QLORAD_RETURN_IF_ERROR(RemoveTree(tmp_dir.string()));
    fs::create_directories(tmp_dir, ec);
    if (ec) return Internal(tmp_dir.string() + ": cannot create directory: " + ec.message());
  }
  QLORAD_RETURN_IF_ERROR(comm.Barrier()->Wait());  // the directory exists for every rank
  QLORAD_RETURN_IF_ERROR(SaveAdapterFromRanks(parallel, spec, (tmp_dir / "adapter").string()));
  QLORAD_RETURN_IF_ERROR(SaveParameterShards(tmp_dir.string(), parallel, optimizer));
  if (rank0) {
    const json state_json = {{"step", state.step},
                             {"data", {{"epoch", state.data.epoch}, {"row", state.data.row}}},
                             {"seed", state.seed},
                             {"world_size", comm.world_size()},
                             {"rng", "dropout reseeded per step from (seed, step)"},
                             {"eval", EvalProgressJson(state.eval)},
                             {"forward_rows", state.forward_rows}};
    QLORAD_RETURN_IF_ERROR(WriteJsonFile((tmp_dir / "state.json").string(), state_json));
  }
  QLORAD_RETURN_IF_ERROR(comm.Barrier()->Wait());  // every shard is written
  if (!rank0) return final_dir.string();
  std::error_code ec;
  QLORAD_RETURN_IF_ERROR(RemoveTree(final_dir.string()));
  fs::rename(tmp_dir, final_dir, ec);
  if (ec)
    return Internal(final_dir.string() + ": cannot move checkpoint into place: " + ec.message());
  std::vector<fs::path> dirs = StepDirs(root);
  for (size_t i = 0; i + static_cast<size_t>(std::max(keep, 1)) < dirs.size(); ++i) {
    QLORAD_RETURN_IF_ERROR(RemoveTree(dirs[i].string()));
  }
  return final_dir.string();
}

Status RemoveCheckpointsExcept(const std::string& checkpoints_dir, const std::string& kept) {
  const fs::path keep = fs::absolute(kept);
  for (const fs::path& dir : StepDirs(fs::absolute(checkpoints_dir))) {
    if (dir != keep) QLORAD_RETURN_IF_ERROR(RemoveTree(dir.string()));
  }
  return Status::Ok();
}

StatusOr<std::string> ResolveResumeCheckpoint(const std::string& dir) {
  const fs::path path(dir);
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return NotFound("--resume: not a directory: " + dir);
  if (StepOf(path) >= 0 && IsComplete(path)) return fs::absolute(path).string();
  std::optional<std::string> newest = NewestCheckpoint({dir});
  if (!newest) return NotFound("--resume: no step-N checkpoint in " + dir);
  return *newest;
}

std::optional<std::string> NewestCheckpoint(const std::vector<std::string>& dirs) {
  std::optional<fs::path> newest;
  for (const std::string& dir : dirs) {
    for (const fs::path& step : CompleteCheckpoints(fs::path(dir))) {
      if (!newest || StepOf(step) > StepOf(*newest)) newest = step;
    }
  }
  if (!newest) return std::nullopt;
  return fs::absolute(*newest).string();
}

StatusOr<ResumeState> LoadResumeCheckpoint(const std::string& checkpoint_dir,
                                           const parallel::DataParallel& parallel,
                                           torch::optim::Optimizer& optimizer) {
  const std::string state_path = checkpoint_dir + "/state.json";
  QLORAD_ASSIGN_OR_RETURN(const json j, ReadJsonFile(state_path));
  ResumeState state;
  try {
    state.step = j.at("step").get<int64_t>();
    state.data.epoch = j.at("data").at("epoch").get<int64_t>();
    state.data.row = j.at("data").at("row").get<int64_t>();
    state.seed = j.at("seed").get<uint64_t>();
    // Absent in checkpoints written before evaluation existed.
    if (j.contains("eval")) state.eval = EvalProgressFromJson(j.at("eval"));
    // Absent in checkpoints written before the reduced micro-batch was kept.
    if (j.contains("forward_rows")) state.forward_rows = j.at("forward_rows").get<int64_t>();
  } catch (const json::exception& e) {
    return DataLoss(state_path + ": " + e.what());
  }
  QLORAD_RETURN_IF_ERROR(LoadParameterShards(checkpoint_dir, parallel, optimizer));
  return state;
}

}  // namespace qlorad::trainer
