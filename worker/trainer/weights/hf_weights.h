// The weights of a Hugging Face model directory: model.safetensors, or the shards named by
// model.safetensors.index.json. Lookups check the shape, so a mismatched checkpoint fails with the
// file and tensor name instead of a broadcasting surprise later.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/trainer/io/safetensors.h"

namespace qlorad::trainer {

class HfWeights {
 public:
  static StatusOr<HfWeights> Open(const std::string& model_dir);

  bool Has(const std::string& name) const { return where_.count(name) != 0; }
  // A CPU tensor converted to `dtype`; errors name the file and the tensor.
  StatusOr<at::Tensor> Get(const std::string& name, const std::vector<int64_t>& shape,
                           at::ScalarType dtype) const;
  // The tensor exactly as stored (its own dtype and shape): bitsandbytes keeps packed bytes and
  // quantization state next to the weights.
  StatusOr<at::Tensor> GetStored(const std::string& name) const;
  // The file that holds `name`, or the model directory when none does (for error messages).
  std::string FileOf(const std::string& name) const;

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<const SafetensorsFile*, const SafetensorsTensorInfo*>> where_;
};

}  // namespace qlorad::trainer
