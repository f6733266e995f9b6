// Torch-free reader and writer for the safetensors format (8-byte little-endian header length,
// a JSON header, then the raw tensor bytes). The reader maps the file and validates the header
// against the file before handing out any pointer, so a truncated or hostile file becomes a
// Status that names the file and the tensor, never an out-of-bounds read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

// Bytes per element of a safetensors dtype name ("F32", "BF16", ...); 0 when unknown.
size_t SafetensorsDtypeSize(const std::string& dtype);

struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section, as in the header
  uint64_t end = 0;

  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Largest header we accept; the reference implementation uses the same 100 MB bound.
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  static StatusOr<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when the file has no such tensor.
  const SafetensorsTensorInfo* Find(const std::string& name) const;
  // Start of the tensor's bytes (valid while this object lives); size is info.end - info.begin.
  const uint8_t* Data(const SafetensorsTensorInfo& info) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  const uint8_t* data_start_ = nullptr;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct SafetensorsTensorToWrite {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel * dtype size bytes
};

// Writes tensors in name order; the header is padded to 8 bytes so every tensor starts aligned.
Status WriteSafetensors(const std::string& path,
                        const std::vector<SafetensorsTensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace qlorad::trainer
