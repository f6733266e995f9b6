#include "worker/trainer/train/resume_checkpoint_shards.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>
#include <vector>

#include "worker/trainer/io/json_file.h"
#include "worker/trainer/io/safetensors.h"
#include "worker/trainer/weights/safetensors_torch.h"

namespace qlorad::trainer {

namespace {

using nlohmann::json;
using parallel::ParameterLayout;
using parallel::ShardSpec;

constexpr const char* kManifest = "manifest.json";
constexpr const char* kFormat = "qlorad-lora-shards-1";
// The per-element tensors of a shard; "step" is one int64 per shard.
constexpr const char* kElementwise[] = {"value", "exp_avg", "exp_avg_sq"};

std::string ShardFileName(int index, int count) {
  char name[64];
  std::snprintf(name, sizeof(name), "shard-%05d-of-%05d.safetensors", index, count);
  return name;
}

std::string TensorKey(const ParameterLayout& layout) {
  if (layout.whole) return layout.module;
  return layout.module + (layout.lora_a ? ".lora_A" : ".lora_B");
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return json(shape).dump();
}

torch::optim::AdamWParamState* AdamWStateOf(torch::optim::Optimizer& optimizer,
                                            const at::Tensor& param) {
  auto it = optimizer.state().find(param.unsafeGetTensorImpl());
  if (it == optimizer.state().end()) return nullptr;
  return static_cast<torch::optim::AdamWParamState*>(it->second.get());
}

struct Manifest {
  int shards = 0;
  std::map<std::string, ShardSpec> tensors;  // by TensorKey
};

StatusOr<Manifest> ReadManifest(const std::string& path) {
  QLORAD_ASSIGN_OR_RETURN(const json j, ReadJsonFile(path));
  Manifest manifest;
  try {
    if (j.at("format").get<std::string>() != kFormat) {
      return DataLoss(path + ": format '" + j.at("format").get<std::string>() + "', expected " +
                      kFormat);
    }
    manifest.shards = j.at("shards").get<int>();
    if (manifest.shards < 1) return DataLoss(path + ": shards must be at least 1");
    for (const json& entry : j.at("tensors")) {
      const std::string key = entry.at("tensor").get<std::string>();
      const auto shape = entry.at("shape").get<std::vector<int64_t>>();
      const int64_t unit = entry.at("unit").get<int64_t>();
      if (unit < 1 || std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 0; })) {
        return DataLoss(path + ": " + key + ": bad shape/unit");
      }
      // The split SaveParameterShards wrote: MakeShardSpec's over `shards` ranks.
      ShardSpec spec = parallel::MakeShardSpec(shape, unit, manifest.shards);
      const int64_t rows_per_rank = entry.at("rows_per_rank").get<int64_t>();
      if (rows_per_rank != spec.rows_per_rank) {
        return DataLoss(path + ": " + key + ": rows_per_rank " + std::to_string(rows_per_rank) +
                        ", but " + std::to_string(spec.rows) + " rows in " +
                        std::to_string(manifest.shards) + " shards make " +
                        std::to_string(spec.rows_per_rank));
      }
      manifest.tensors[key] = std::move(spec);
    }
  } catch (const json::exception& e) {
    return DataLoss(path + ": " + e.what());
  }
  return manifest;
}

// Tensor `name` of every shard file, each `numel` elements, concatenated in shard order: what an
// all-gather of the ranks that wrote them returned.
StatusOr<at::Tensor> ConcatShards(const std::vector<SafetensorsFile>& files,
                                  const std::string& name, int64_t numel) {
  std::vector<at::Tensor> parts;
  for (const SafetensorsFile& file : files) {
    const SafetensorsTensorInfo* info = file.Find(name);
    if (info == nullptr) return DataLoss(file.path() + ": no tensor " + name);
    if (info->numel() != numel) {
      return DataLoss(file.path() + ": " + name + " has " + std::to_string(info->numel()) +
                      " elements, the manifest's split gives " + std::to_string(numel));
    }
    QLORAD_ASSIGN_OR_RETURN(at::Tensor part, ReadTensor(file, *info));
    parts.push_back(part.reshape({-1}));
  }
  return at::cat(parts);
}

}  // namespace

Status SaveParameterShards(const std::string& dir, const parallel::DataParallel& parallel,
                           torch::optim::Optimizer& optimizer) {
  const std::vector<at::Tensor> params = parallel.AllParameters();
  const std::vector<ParameterLayout> layouts = parallel.AllParameterLayouts();
  if (params.size() != layouts.size()) {
    return Internal("checkpoint: " + std::to_string(params.size()) + " parameters but " +
                    std::to_string(layouts.size()) + " layouts");
  }
  const bool rank0 = parallel.comm().rank() == 0;
  if (rank0) {
    json tensors = json::array();
    for (const ParameterLayout& layout : layouts) {
      tensors.push_back({{"tensor", TensorKey(layout)},
                         {"shape", layout.spec.shape},
                         {"unit", layout.spec.unit},
                         {"rows_per_rank", layout.spec.rows_per_rank}});
    }
    QLORAD_RETURN_IF_ERROR(WriteJsonFile(
        dir + "/" + kManifest,
        {{"format", kFormat}, {"shards", parallel.shard_count()}, {"tensors", tensors}}));
  }
  if (!parallel.sharded() && !rank0) return Status::Ok();  // rank 0 holds the one replica
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t i = 0; i < params.size(); ++i) {
    // This rank's part of the tensor: the parameter itself, or its rows of a whole parameter
    // that every rank holds (the layout splits it over the shards like the others).
    const auto local = [&](const at::Tensor& t) {
      const at::Tensor flat = t.detach().reshape({-1}).to(at::kCPU, at::kFloat);
      return layouts[i].whole ? ShardOf(flat, layouts[i].spec, parallel.shard_index()) : flat;
    };
    const at::Tensor value = local(params[i]);
    const std::string key = TensorKey(layouts[i]);
    at::Tensor exp_avg = at::zeros_like(value);
    at::Tensor exp_avg_sq = at::zeros_like(value);
    int64_t step = 0;  // no state yet: AdamW starts it on its first step
    if (const auto* state = AdamWStateOf(optimizer, params[i])) {
      step = state->step();
      exp_avg = local(state->exp_avg());
      exp_avg_sq = local(state->exp_avg_sq());
    }
    tensors.emplace_back(key + ".value", value);
    tensors.emplace_back(key + ".exp_avg", exp_avg);
    tensors.emplace_back(key + ".exp_avg_sq", exp_avg_sq);
    tensors.emplace_back(key + ".step", at::full({1}, step, at::kLong));
  }
  return SaveTensors(dir + "/" + ShardFileName(parallel.shard_index(), parallel.shard_count()),
                     tensors);
}

Status LoadParameterShards(const std::string& dir, const parallel::DataParallel& parallel,
                           torch::optim::Optimizer& optimizer) {
  const std::string manifest_path = dir + "/" + kManifest;
  QLORAD_ASSIGN_OR_RETURN(const Manifest manifest, ReadManifest(manifest_path));
  std::vector<SafetensorsFile> files;
  for (int i = 0; i < manifest.shards; ++i) {
    QLORAD_ASSIGN_OR_RETURN(SafetensorsFile file,
                            SafetensorsFile::Open(dir + "/" + ShardFileName(i, manifest.shards)));
    files.push_back(std::move(file));
  }
  const std::vector<at::Tensor> params = parallel.AllParameters();
  const std::vector<ParameterLayout> layouts = parallel.AllParameterLayouts();
  std::set<std::string> model_keys;
  for (const ParameterLayout& layout : layouts) model_keys.insert(TensorKey(layout));
  for (const auto& [key, spec] : manifest.tensors) {
    if (model_keys.count(key) == 0) {
      return InvalidArgument(manifest_path + ": LoRA tensor " + key +
                             " is not in the model (the checkpoint was trained with other "
                             "lora.target_modules)");
    }
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    const ParameterLayout& layout = layouts[i];
    const std::string key = TensorKey(layout);
    const auto saved = manifest.tensors.find(key);
    if (saved == manifest.tensors.end()) {
      return InvalidArgument(manifest_path + ": no LoRA tensor " + key +
                             " (the checkpoint was trained with other lora.target_modules)");
    }
    const ShardSpec& old = saved->second;
    if (old.shape != layout.spec.shape) {
      return InvalidArgument(manifest_path + ": " + key + " has shape " + ShapeString(old.shape) +
                             ", the model's is " + ShapeString(layout.spec.shape) +
                             " (other lora.r or model?)");
    }
    // Reassemble the whole tensor from the old split, then cut this rank's part of the new one
    // (a whole parameter: all of it).
    std::map<std::string, at::Tensor> mine;
    for (const char* field : kElementwise) {
      QLORAD_ASSIGN_OR_RETURN(const at::Tensor gathered,
                              ConcatShards(files, key + "." + field, old.shard_numel()));
      const at::Tensor full = Unshard(gathered, old);
      mine[field] =
          layout.whole ? full.reshape({-1}) : ShardOf(full, layout.spec, parallel.shard_index());
    }
    QLORAD_ASSIGN_OR_RETURN(const at::Tensor steps, ConcatShards(files, key + ".step", 1));
    const int64_t step = steps[0].item<int64_t>();
    const at::Tensor& param = params[i];
    param.detach().view({-1}).copy_(mine["value"]);
    if (step == 0) {
      optimizer.state().erase(param.unsafeGetTensorImpl());
      continue;
    }
    auto state = std::make_unique<torch::optim::AdamWParamState>();
    state->step(step);
    state->exp_avg(mine["exp_avg"].view(param.sizes()).to(param.options()));
    state->exp_avg_sq(mine["exp_avg_sq"].view(param.sizes()).to(param.options()));
    optimizer.state()[param.unsafeGetTensorImpl()] = std::move(state);
  }
  return Status::Ok();
}

}  // namespace qlorad::trainer
