#include "worker/trainer/io/gguf_writer.h"

#include <bit>
#include <cerrno>
#include <cstring>
#include <set>

#include "worker/trainer/io/ggml_quants.h"

namespace qlorad::trainer {

// GGUF is little-endian; values are copied as they lie in memory.
static_assert(std::endian::native == std::endian::little, "the GGUF writer assumes little-endian");

namespace {

template <typename T>
void Append(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

// gguf_string_t: a uint64 length and the UTF-8 bytes, no terminator.
void AppendString(std::string& out, const std::string& s) {
  Append<uint64_t>(out, s.size());
  out.append(s);
}

uint64_t AlignUp(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

}  // namespace

const char* GgmlTypeName(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return "F32";
    case GgmlType::kF16:
      return "F16";
    case GgmlType::kQ8_0:
      return "Q8_0";
  }
  return "?";
}

StatusOr<int64_t> GgmlRowBytes(GgmlType type, int64_t n) {
  switch (type) {
    case GgmlType::kF32:
      return 4 * n;
    case GgmlType::kF16:
      return 2 * n;
    case GgmlType::kQ8_0:
      if (n % kQ8_0BlockValues != 0) {
        return InvalidArgument("Q8_0: a row of " + std::to_string(n) +
                               " values is not a whole number of 32-value blocks");
      }
      return n / kQ8_0BlockValues * kQ8_0BlockBytes;
  }
  return InvalidArgument("unknown ggml type " + std::to_string(static_cast<uint32_t>(type)));
}

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  AddUint32("general.alignment", alignment);
}

GgufWriter::~GgufWriter() {
  if (out_ != nullptr) std::fclose(out_);
}

void GgufWriter::BeginKey(const std::string& key, GgufValueType type) {
  keys_.push_back(key);
  AppendString(metadata_, key);
  Append<uint32_t>(metadata_, static_cast<uint32_t>(type));
}

void GgufWriter::AddUint32(const std::string& key, uint32_t value) {
  BeginKey(key, GgufValueType::kUint32);
  Append(metadata_, value);
}

void GgufWriter::AddInt32(const std::string& key, int32_t value) {
  BeginKey(key, GgufValueType::kInt32);
  Append(metadata_, value);
}

void GgufWriter::AddUint64(const std::string& key, uint64_t value) {
  BeginKey(key, GgufValueType::kUint64);
  Append(metadata_, value);
}

void GgufWriter::AddFloat32(const std::string& key, float value) {
  BeginKey(key, GgufValueType::kFloat32);
  Append(metadata_, value);
}

void GgufWriter::AddBool(const std::string& key, bool value) {
  BeginKey(key, GgufValueType::kBool);
  Append<uint8_t>(metadata_, value ? 1 : 0);  // a bool is one byte, 0 or 1
}

void GgufWriter::AddString(const std::string& key, const std::string& value) {
  BeginKey(key, GgufValueType::kString);
  AppendString(metadata_, value);
}

// An array is its element type, a uint64 count, then the elements without their type.
void GgufWriter::AddStringArray(const std::string& key, const std::vector<std::string>& values) {
  BeginKey(key, GgufValueType::kArray);
  Append<uint32_t>(metadata_, static_cast<uint32_t>(GgufValueType::kString));
  Append<uint64_t>(metadata_, values.size());
  for (const std::string& v : values) AppendString(metadata_, v);
}

void GgufWriter::AddInt32Array(const std::string& key, const std::vector<int32_t>& values) {
  BeginKey(key, GgufValueType::kArray);
  Append<uint32_t>(metadata_, static_cast<uint32_t>(GgufValueType::kInt32));
  Append<uint64_t>(metadata_, values.size());
  for (int32_t v : values) Append(metadata_, v);
}

void GgufWriter::AddFloat32Array(const std::string& key, const std::vector<float>& values) {
  BeginKey(key, GgufValueType::kArray);
  Append<uint32_t>(metadata_, static_cast<uint32_t>(GgufValueType::kFloat32));
  Append<uint64_t>(metadata_, values.size());
  for (float v : values) Append(metadata_, v);
}

Status GgufWriter::AddTensor(const std::string& name, const std::vector<int64_t>& shape,
                             GgmlType type) {
  if (out_ != nullptr) return FailedPrecondition("gguf: tensor '" + name + "' declared after Open");
  if (shape.empty() || shape.size() > 4) {
    return InvalidArgument("gguf: tensor '" + name +
                           "': ggml tensors have 1 to 4 dimensions, got " +
                           std::to_string(shape.size()));
  }
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  for (int64_t d : shape) {
    if (d <= 0) return InvalidArgument("gguf: tensor '" + name + "': empty dimension");
  }
  auto row_bytes = GgmlRowBytes(type, shape.back());
  if (!row_bytes.ok()) {
    return InvalidArgument("gguf: tensor '" + name + "': " + row_bytes.status().message());
  }
  TensorInfo info{name, shape, type, rows * *row_bytes, data_size_};
  data_size_ = AlignUp(data_size_ + static_cast<uint64_t>(info.bytes), alignment_);
  tensors_.push_back(std::move(info));
  return Status::Ok();
}

Status GgufWriter::WriteBytes(const void* data, size_t size) {
  if (size > 0 && std::fwrite(data, 1, size, out_) != size) {
    return Internal(path_ + ": write failed: " + std::strerror(errno));
  }
  written_ += size;
  return Status::Ok();
}

// Zeros up to the next multiple of the alignment. The data section starts aligned, so aligning
// the file offset aligns the offset within the section too.
Status GgufWriter::Pad() {
  static const char kZeros[256] = {};
  uint64_t pad = AlignUp(written_, alignment_) - written_;
  while (pad > 0) {
    const size_t n = pad < sizeof(kZeros) ? pad : sizeof(kZeros);
    QLORAD_RETURN_IF_ERROR(WriteBytes(kZeros, n));
    pad -= n;
  }
  return Status::Ok();
}

Status GgufWriter::Open(const std::string& path) {
  if (alignment_ == 0 || alignment_ % 8 != 0) {
    return InvalidArgument("gguf: general.alignment must be a positive multiple of 8, got " +
                           std::to_string(alignment_));
  }
  std::set<std::string> seen;
  for (const std::string& key : keys_) {
    if (!seen.insert(key).second) return InvalidArgument("gguf: metadata key '" + key + "' twice");
  }
  seen.clear();
  for (const TensorInfo& t : tensors_) {
    if (!seen.insert(t.name).second) return InvalidArgument("gguf: tensor '" + t.name + "' twice");
  }
  path_ = path;
  // "x": fail rather than replace an existing file.
  out_ = std::fopen(path.c_str(), "wbx");
  if (out_ == nullptr) {
    return errno == EEXIST ? InvalidArgument(path + ": exists; not overwritten")
                           : Internal(path + ": cannot create: " + std::strerror(errno));
  }
  std::string head;
  head.append("GGUF", 4);
  Append<uint32_t>(head, kVersion);
  Append<uint64_t>(head, tensors_.size());
  Append<uint64_t>(head, keys_.size());
  head += metadata_;
  for (const TensorInfo& t : tensors_) {
    AppendString(head, t.name);
    Append<uint32_t>(head, static_cast<uint32_t>(t.shape.size()));
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d) {
      Append<uint64_t>(head, static_cast<uint64_t>(*d));
    }
    Append<uint32_t>(head, static_cast<uint32_t>(t.type));
    Append<uint64_t>(head, t.offset);
  }
  QLORAD_RETURN_IF_ERROR(WriteBytes(head.data(), head.size()));
  return Pad();
}

Status GgufWriter::WriteTensorData(const std::string& name, const void* data, int64_t bytes) {
  if (out_ == nullptr) return FailedPrecondition("gguf: WriteTensorData before Open");
  if (next_tensor_ >= tensors_.size()) {
    return FailedPrecondition("gguf: tensor '" + name + "' written but not declared");
  }
  const TensorInfo& t = tensors_[next_tensor_];
  if (t.name != name) {
    return FailedPrecondition("gguf: tensor '" + name + "' written where '" + t.name +
                              "' was declared");
  }
  if (bytes != t.bytes) {
    return InvalidArgument("gguf: tensor '" + name + "': " + std::to_string(bytes) +
                           " bytes given, " + std::to_string(t.bytes) + " declared");
  }
  ++next_tensor_;
  QLORAD_RETURN_IF_ERROR(WriteBytes(data, static_cast<size_t>(bytes)));
  return Pad();
}

Status GgufWriter::Close() {
  if (out_ == nullptr) return FailedPrecondition("gguf: Close before Open");
  if (next_tensor_ != tensors_.size()) {
    return FailedPrecondition("gguf: " + path_ + ": tensor '" + tensors_[next_tensor_].name +
                              "' was declared but not written");
  }
  const int rc = std::fclose(out_);
  out_ = nullptr;
  if (rc != 0) return Internal(path_ + ": close failed: " + std::strerror(errno));
  return Status::Ok();
}

}  // namespace qlorad::trainer
