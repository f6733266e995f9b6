// libFuzzer target: the safetensors reader (worker/trainer/io/safetensors.h). The input is a whole
// file (8-byte header length, JSON header, data); Open must refuse a bad one with a Status, and
// every tensor of a file it accepts must lie inside the mapping: the first and last byte of each
// are read, so AddressSanitizer sees any range that escapes.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "worker/trainer/io/safetensors.h"

namespace {

// One in-memory file for the whole run, rewritten per input: Open takes a path and maps it.
int MemoryFile() {
  static const int fd = memfd_create("safetensors_fuzz", 0);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = MemoryFile();
  if (fd < 0 || ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) {
    __builtin_trap();  // the harness itself failed; not a finding about the reader
  }
  auto file = qlorad::trainer::SafetensorsFile::Open("/proc/self/fd/" + std::to_string(fd));
  if (!file.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const auto& info : file->tensors()) {
    if (file->Find(info.name) != &info) __builtin_trap();
    const uint8_t* bytes = file->Data(info);
    if (info.end > info.begin) sink = sink + bytes[0] + bytes[info.end - info.begin - 1];
    (void)info.numel();
  }
  for (const auto& [key, value] : file->metadata()) sink = sink + key.size() + value.size();
  return 0;
}
