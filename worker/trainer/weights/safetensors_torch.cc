#include "worker/trainer/weights/safetensors_torch.h"

#include <cstring>

namespace qlorad::trainer {

namespace {

const std::vector<std::pair<std::string, at::ScalarType>>& DtypeTable() {
  static const std::vector<std::pair<std::string, at::ScalarType>> kTable = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}};
  return kTable;
}

}  // namespace

StatusOr<at::ScalarType> ScalarTypeFromSafetensors(const std::string& dtype) {
  for (const auto& [name, type] : DtypeTable()) {
    if (name == dtype) return type;
  }
  return InvalidArgument("safetensors dtype '" + dtype + "' has no torch equivalent here");
}

StatusOr<std::string> SafetensorsDtypeName(at::ScalarType type) {
  for (const auto& [name, t] : DtypeTable()) {
    if (t == type) return name;
  }
  return InvalidArgument(std::string("cannot store torch dtype ") + c10::toString(type) +
                         " in safetensors");
}

StatusOr<at::Tensor> ReadTensor(const SafetensorsFile& file, const SafetensorsTensorInfo& info) {
  StatusOr<at::ScalarType> type = ScalarTypeFromSafetensors(info.dtype);
  if (!type.ok()) {
    return InvalidArgument(file.path() + ": tensor '" + info.name +
                           "': " + type.status().message());
  }
  // Copy instead of from_blob: the data section need not be aligned for the element type.
  at::Tensor t = at::empty(info.shape, at::TensorOptions().dtype(*type));
  std::memcpy(t.data_ptr(), file.Data(info), info.end - info.begin);
  return t;
}

Status SaveTensors(const std::string& path,
                   const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                   const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> cpu;  // keeps the bytes alive while writing
  std::vector<SafetensorsTensorToWrite> to_write;
  for (const auto& [name, tensor] : tensors) {
    QLORAD_ASSIGN_OR_RETURN(std::string dtype, SafetensorsDtypeName(tensor.scalar_type()));
    cpu.push_back(tensor.detach().to(at::kCPU).contiguous());
    to_write.push_back({name, dtype, cpu.back().sizes().vec(), cpu.back().data_ptr()});
  }
  return WriteSafetensors(path, to_write, metadata);
}

}  // namespace qlorad::trainer
