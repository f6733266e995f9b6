#include "worker/trainer/weights/hf_weights.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "worker/trainer/io/json_file.h"
#include "worker/trainer/weights/safetensors_torch.h"

namespace qlorad::trainer {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The shard file names listed in an index's weight_map.
StatusOr<std::vector<std::string>> ShardsFromIndex(const std::string& index_path) {
  QLORAD_ASSIGN_OR_RETURN(const json index, ReadJsonFile(index_path));
  if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
    return InvalidArgument(index_path + ": weight_map: missing or not an object");
  }
  std::set<std::string> shards;
  for (const auto& [name, file] : index["weight_map"].items()) {
    // A shard name is a plain file name; anything else could read outside the model directory.
    if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos) {
      return InvalidArgument(index_path + ": weight_map." + name + ": expected a file name");
    }
    shards.insert(file.get<std::string>());
  }
  return std::vector<std::string>(shards.begin(), shards.end());
}

}  // namespace

StatusOr<HfWeights> HfWeights::Open(const std::string& model_dir) {
  std::vector<std::string> names;
  const std::string index_path = model_dir + "/model.safetensors.index.json";
  if (fs::exists(model_dir + "/model.safetensors")) {
    names = {"model.safetensors"};
  } else if (fs::exists(index_path)) {
    QLORAD_ASSIGN_OR_RETURN(names, ShardsFromIndex(index_path));
  } else {
    return NotFound("model.path: " + model_dir +
                    " has neither model.safetensors nor model.safetensors.index.json");
  }
  HfWeights weights;
  weights.dir_ = model_dir;
  for (const std::string& name : names) {
    QLORAD_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(model_dir + "/" + name));
    weights.files_.push_back(std::make_shared<SafetensorsFile>(std::move(file)));
    const SafetensorsFile* f = weights.files_.back().get();
    for (const auto& info : f->tensors()) weights.where_[info.name] = {f, &info};
  }
  return weights;
}

StatusOr<at::Tensor> HfWeights::Get(const std::string& name, const std::vector<int64_t>& shape,
                                    at::ScalarType dtype) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return InvalidArgument("model.path: " + dir_ + ": tensor '" + name + "' is missing");
  }
  const auto [file, info] = it->second;
  if (info->shape != shape) {
    return InvalidArgument(file->path() + ": tensor '" + name + "' has shape " +
                           ShapeString(info->shape) + ", config.json implies " +
                           ShapeString(shape));
  }
  QLORAD_ASSIGN_OR_RETURN(at::Tensor t, ReadTensor(*file, *info));
  return t.to(dtype);
}

StatusOr<at::Tensor> HfWeights::GetStored(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return InvalidArgument("model.path: " + dir_ + ": tensor '" + name + "' is missing");
  }
  return ReadTensor(*it->second.first, *it->second.second);
}

std::string HfWeights::FileOf(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? dir_ : it->second.first->path();
}

}  // namespace qlorad::trainer
