// Torch-free writer for GGUF v3, the model file format of llama.cpp and Ollama: a header (magic
// "GGUF", version 3, tensor count, metadata count), typed key/value metadata, one info record per
// tensor (name, dimensions in ggml's order, type, offset), padding to `general.alignment`, then
// every tensor's bytes, each padded to the alignment. Everything is little-endian.
//
// Tensor bytes are streamed: Open() writes everything up to the data section (offsets follow from
// the declared shapes and types), then WriteTensorData() is called once per tensor in the order
// declared, so a writer never holds more than one tensor of a model.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

// GGUF metadata value types (gguf.md's gguf_metadata_value_type).
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// The ggml tensor types this writer lays out (ggml.h's enum ggml_type values).
enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ8_0 = 8 };

const char* GgmlTypeName(GgmlType type);

// Bytes of one row of `n` elements of `type`; an error when a quantized row is not whole blocks.
StatusOr<int64_t> GgmlRowBytes(GgmlType type, int64_t n);

class GgufWriter {
 public:
  static constexpr uint32_t kVersion = 3;
  static constexpr uint32_t kDefaultAlignment = 32;

  // `alignment` is also written as general.alignment (readers default to 32 without it).
  explicit GgufWriter(uint32_t alignment = kDefaultAlignment);
  ~GgufWriter();
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // Metadata, written in the order added. A key added twice is an error at Open().
  void AddUint32(const std::string& key, uint32_t value);
  void AddInt32(const std::string& key, int32_t value);
  void AddUint64(const std::string& key, uint64_t value);
  void AddFloat32(const std::string& key, float value);
  void AddBool(const std::string& key, bool value);
  void AddString(const std::string& key, const std::string& value);
  void AddStringArray(const std::string& key, const std::vector<std::string>& values);
  void AddInt32Array(const std::string& key, const std::vector<int32_t>& values);
  void AddFloat32Array(const std::string& key, const std::vector<float>& values);

  // Declares a tensor. `shape` is row-major (PyTorch's order: the last dimension is contiguous);
  // the file stores it reversed, as ggml's ne[0] is the contiguous one.
  Status AddTensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type);

  // Creates `path` (an existing file is an error: this never overwrites) and writes the header,
  // the metadata, the tensor infos and the padding before the data section.
  Status Open(const std::string& path);
  // The next declared tensor's bytes (exactly its size); pads it to the alignment.
  Status WriteTensorData(const std::string& name, const void* data, int64_t bytes);
  // Checks that every declared tensor was written and closes the file.
  Status Close();

  // Bytes the declared tensor takes in the data section, before padding.
  int64_t TensorBytes(size_t index) const { return tensors_[index].bytes; }
  size_t tensor_count() const { return tensors_.size(); }

 private:
  struct TensorInfo {
    std::string name;
    std::vector<int64_t> shape;
    GgmlType type;
    int64_t bytes = 0;
    uint64_t offset = 0;  // from the start of the data section
  };

  void BeginKey(const std::string& key, GgufValueType type);
  Status WriteBytes(const void* data, size_t size);
  Status Pad();

  uint32_t alignment_;
  std::string metadata_;  // the key/value records, serialized as they are added
  std::vector<std::string> keys_;
  std::vector<TensorInfo> tensors_;
  uint64_t data_size_ = 0;

  std::string path_;
  std::FILE* out_ = nullptr;
  uint64_t written_ = 0;  // bytes written to the file so far
  size_t next_tensor_ = 0;
};

}  // namespace qlorad::trainer
