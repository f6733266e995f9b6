// The bridge between safetensors files and at::Tensor: copies out of the mapping (so tensors
// outlive the file) and writes CPU copies of tensors.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/trainer/io/safetensors.h"

namespace qlorad::trainer {

StatusOr<at::ScalarType> ScalarTypeFromSafetensors(const std::string& dtype);
StatusOr<std::string> SafetensorsDtypeName(at::ScalarType type);

// A CPU tensor with the file's dtype and shape, owning its bytes.
StatusOr<at::Tensor> ReadTensor(const SafetensorsFile& file, const SafetensorsTensorInfo& info);

Status SaveTensors(const std::string& path,
                   const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                   const std::map<std::string, std::string>& metadata = {});

}  // namespace qlorad::trainer
