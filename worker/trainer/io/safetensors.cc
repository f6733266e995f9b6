#include "worker/trainer/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

namespace qlorad::trainer {

using nlohmann::json;

size_t SafetensorsDtypeSize(const std::string& dtype) {
  static const std::map<std::string, size_t> kSizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2},    {"I64", 8},
      {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},      {"BOOL", 1},
      {"U16", 2}, {"U32", 4}, {"U64", 8}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = kSizes.find(dtype);
  return it == kSizes.end() ? 0 : it->second;
}

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr != nullptr) munmap(addr, size);
  }
};

namespace {

Status Corrupt(const std::string& path, const std::string& what) {
  return DataLoss(path + ": " + what);
}

// Reads one header entry; shape and offsets are checked against each other and the file later.
StatusOr<SafetensorsTensorInfo> ParseEntry(const std::string& path, const std::string& name,
                                           const json& entry) {
  const std::string where = "tensor '" + name + "'";
  if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
      !entry.contains("data_offsets")) {
    return Corrupt(path, where + ": header entry needs dtype, shape and data_offsets");
  }
  SafetensorsTensorInfo info;
  info.name = name;
  if (!entry["dtype"].is_string()) return Corrupt(path, where + ": dtype is not a string");
  info.dtype = entry["dtype"].get<std::string>();
  if (SafetensorsDtypeSize(info.dtype) == 0) {
    return Corrupt(path, where + ": unknown dtype '" + info.dtype + "'");
  }
  const json& shape = entry["shape"];
  if (!shape.is_array()) return Corrupt(path, where + ": shape is not an array");
  constexpr int64_t kMaxElements = int64_t{1} << 48;  // keeps the byte count from overflowing
  int64_t numel = 1;
  for (const json& d : shape) {
    if (!d.is_number_unsigned()) return Corrupt(path, where + ": shape has a non-integer dim");
    const auto dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(kMaxElements)) return Corrupt(path, where + ": dim too large");
    info.shape.push_back(static_cast<int64_t>(dim));
    numel = dim == 0 ? 0 : numel * static_cast<int64_t>(dim);
    if (numel > kMaxElements) return Corrupt(path, where + ": too many elements");
  }
  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return Corrupt(path, where + ": data_offsets must be two unsigned integers");
  }
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  if (info.end < info.begin) return Corrupt(path, where + ": data_offsets end before begin");
  const uint64_t want = static_cast<uint64_t>(numel) * SafetensorsDtypeSize(info.dtype);
  if (info.end - info.begin != want) {
    return Corrupt(path, where + ": data_offsets cover " + std::to_string(info.end - info.begin) +
                             " bytes but dtype and shape need " + std::to_string(want));
  }
  return info;
}

}  // namespace

StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    return Internal(path + ": cannot stat: " + std::strerror(errno));
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->size = static_cast<size_t>(st.st_size);
  if (mapping->size < 8) {
    ::close(fd);
    return Corrupt(path, "file is " + std::to_string(mapping->size) +
                             " bytes, too short for the 8-byte header length");
  }
  mapping->addr = mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (mapping->addr == MAP_FAILED) {
    mapping->addr = nullptr;
    return Internal(path + ": mmap failed: " + std::strerror(errno));
  }
  const auto* bytes = static_cast<const uint8_t*>(mapping->addr);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeaderBytes) {
    return Corrupt(path, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                             std::to_string(kMaxHeaderBytes) + " bytes");
  }
  if (header_len > mapping->size - 8) {
    return Corrupt(path, "header length " + std::to_string(header_len) +
                             " runs past the end of the file (" + std::to_string(mapping->size) +
                             " bytes); truncated?");
  }
  json header;
  try {
    header = json::parse(reinterpret_cast<const char*>(bytes + 8),
                         reinterpret_cast<const char*>(bytes + 8 + header_len));
  } catch (const json::exception& e) {
    return Corrupt(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) return Corrupt(path, "header is not a JSON object");

  SafetensorsFile file;
  file.path_ = path;
  file.data_start_ = bytes + 8 + header_len;
  const uint64_t data_size = mapping->size - 8 - header_len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return Corrupt(path, "__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) return Corrupt(path, "__metadata__." + k + " is not a string");
        file.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    QLORAD_ASSIGN_OR_RETURN(SafetensorsTensorInfo info, ParseEntry(path, name, entry));
    file.tensors_.push_back(std::move(info));
  }
  // The format requires the tensors to tile the data section exactly: no gaps, no overlaps.
  std::vector<const SafetensorsTensorInfo*> by_offset;
  for (const auto& t : file.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return a->begin < b->begin || (a->begin == b->begin && a->end < b->end);
  });
  uint64_t expected = 0;
  for (const auto* t : by_offset) {
    if (t->begin != expected) {
      return Corrupt(path, "tensor '" + t->name + "': data_offsets start at " +
                               std::to_string(t->begin) + ", expected " + std::to_string(expected) +
                               " (offsets must be contiguous)");
    }
    if (t->end > data_size) {
      return Corrupt(path, "tensor '" + t->name + "': data_offsets end at " +
                               std::to_string(t->end) + " but the data section has only " +
                               std::to_string(data_size) + " bytes; truncated?");
    }
    expected = t->end;
  }
  if (expected != data_size) {
    return Corrupt(path, "data section has " + std::to_string(data_size) +
                             " bytes but the tensors cover " + std::to_string(expected));
  }
  file.mapping_ = std::move(mapping);
  return file;
}

const SafetensorsTensorInfo* SafetensorsFile::Find(const std::string& name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const uint8_t* SafetensorsFile::Data(const SafetensorsTensorInfo& info) const {
  return data_start_ + info.begin;
}

Status WriteSafetensors(const std::string& path,
                        const std::vector<SafetensorsTensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  std::vector<const SafetensorsTensorToWrite*> sorted;
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return a->name < b->name; });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const auto* t : sorted) {
    const size_t elem = SafetensorsDtypeSize(t->dtype);
    if (elem == 0)
      return InvalidArgument(path + ": tensor '" + t->name + "': unknown dtype '" + t->dtype + "'");
    int64_t numel = 1;
    for (int64_t d : t->shape) {
      if (d < 0) return InvalidArgument(path + ": tensor '" + t->name + "': negative dim");
      numel *= d;
    }
    const uint64_t size = static_cast<uint64_t>(numel) * elem;
    header[t->name] = {
        {"dtype", t->dtype}, {"shape", t->shape}, {"data_offsets", {offset, offset + size}}};
    sizes.push_back(size);
    offset += size;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Internal(path + ": cannot open for writing: " + std::strerror(errno));
  char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i, n >>= 8) len[i] = static_cast<char>(n & 0xff);
  out.write(len, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (size_t i = 0; i < sorted.size(); ++i) {
    out.write(static_cast<const char*>(sorted[i]->data), static_cast<std::streamsize>(sizes[i]));
  }
  out.close();
  if (!out) return Internal(path + ": write failed: " + std::strerror(errno));
  return Status::Ok();
}

}  // namespace qlorad::trainer
