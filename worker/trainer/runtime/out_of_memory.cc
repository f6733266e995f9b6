#include "worker/trainer/runtime/out_of_memory.h"

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "worker/trainer/runtime/device.h"

namespace qlorad::trainer {

namespace {

constexpr const char* kInjectVariable = "QLORAD_INJECT_OOM_ROWS";
constexpr const char* kFractionVariable = "QLORAD_CUDA_MEMORY_FRACTION";

// Without trailing blanks and the final period: the text goes inside a sentence of ours.
std::string Trim(std::string text) {
  const size_t end = text.find_last_not_of(" \t\n.");
  return end == std::string::npos ? "" : text.substr(0, end + 1);
}

}  // namespace

StatusOr<OomInjection> OomInjection::FromEnvironment() {
  OomInjection injection;
  const char* value = std::getenv(kInjectVariable);
  if (value == nullptr || *value == '\0') return injection;
  char* end = nullptr;
  const long long rows = std::strtoll(value, &end, 10);
  if (*end != '\0' || rows < 0) {
    return InvalidArgument(std::string(kInjectVariable) + ": must be a whole number >= 0, got '" +
                           value + "'");
  }
  injection.max_rows_ = rows;
  return injection;
}

void OomInjection::MaybeThrow(int64_t rows, int64_t bytes) const {
  if (!max_rows_ || rows <= *max_rows_) return;
  char size[32];
  std::snprintf(size, sizeof(size), "%.2f MiB", static_cast<double>(bytes) / (1 << 20));
  TORCH_CHECK_WITH(OutOfMemoryError, false, "Out of memory. Tried to allocate ", size,
                   " (injected: ", kInjectVariable, "=", *max_rows_, ", a micro-batch of ", rows,
                   " rows).\nThe advice a real error gives would follow here.");
}

StatusOr<std::optional<double>> LimitMemoryFromEnvironment(at::Device device) {
  const char* value = std::getenv(kFractionVariable);
  if (value == nullptr || *value == '\0') return std::optional<double>();
  char* end = nullptr;
  const double fraction = std::strtod(value, &end);
  if (*end != '\0') {
    return InvalidArgument(std::string(kFractionVariable) + ": not a number: '" + value + "'");
  }
  const Status limited = LimitMemoryFraction(device, fraction);
  if (!limited.ok()) return Status(limited.code(), kFractionVariable + (": " + limited.message()));
  return std::optional<double>(fraction);
}

std::string DescribeOutOfMemory(const c10::OutOfMemoryError& error) {
  std::string text = error.what_without_backtrace();
  text = text.substr(0, text.find('\n'));
  // The allocator's advice on PYTORCH_CUDA_ALLOC_CONF is no use to a user of the service.
  const size_t advice = text.find(" If reserved but unallocated memory is large");
  if (advice != std::string::npos) text = text.substr(0, advice);
  for (std::string_view prefix : {"CUDA out of memory. ", "Out of memory. "}) {
    if (text.rfind(prefix, 0) == 0) text = text.substr(prefix.size());
  }
  return Trim(text);
}

}  // namespace qlorad::trainer
