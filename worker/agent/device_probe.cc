#include "worker/agent/device_probe.h"

#include <sys/utsname.h>

#include <charconv>
#include <utility>

#include "common/host_memory.h"
#include "common/process/process_supervisor.h"
#include "common/read_file.h"

namespace qlorad::agent {
namespace {

constexpr auto kNvidiaSmiTimeout = std::chrono::milliseconds(30000);
// The free-memory probe runs before each heartbeat of an idle worker: a hung nvidia-smi must not
// delay the heartbeat past the coordinator's timeout (10 s by default, a heartbeat every third).
constexpr auto kFreeProbeTimeout = std::chrono::milliseconds(2000);

std::string_view Trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t");
  return s.substr(first, last - first + 1);
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::optional<std::string> text = ReadWholeFile(path);
  if (!text) return NotFound(path + ": cannot open");
  return std::move(*text);
}

}  // namespace

std::string CpuModelName(std::string_view cpuinfo) {
  if (auto name = ProcField(cpuinfo, "model name"); name && !name->empty()) {
    return std::string(*name);
  }
  // ARM kernels print no "model name"; the architecture is still worth reporting.
  utsname u{};
  ::uname(&u);
  return std::string("CPU (") + u.machine + ")";
}

StatusOr<int64_t> ParseMemTotalBytes(std::string_view meminfo) {
  auto bytes = MeminfoBytes(meminfo, "MemTotal");
  if (bytes.ok() && *bytes == 0) return InvalidArgument("meminfo: MemTotal: 0 kB");
  return bytes;
}

StatusOr<v1::DeviceInfo> DetectCpuDevice(const std::string& cpuinfo_path,
                                         const std::string& meminfo_path) {
  QLORAD_ASSIGN_OR_RETURN(const std::string cpuinfo, ReadFile(cpuinfo_path));
  QLORAD_ASSIGN_OR_RETURN(const std::string meminfo, ReadFile(meminfo_path));
  auto total = ParseMemTotalBytes(meminfo);
  if (!total.ok()) return InvalidArgument(meminfo_path + ": " + total.status().message());
  v1::DeviceInfo device;
  device.set_kind("cpu");
  device.set_index(0);
  device.set_name(CpuModelName(cpuinfo));
  device.set_total_memory_bytes(*total);
  return device;
}

StatusOr<int64_t> ParseNvidiaSmiMib(std::string_view text) {
  const std::string_view mib_text = Trim(text);
  int64_t mib = 0;
  const auto [end, ec] = std::from_chars(mib_text.data(), mib_text.data() + mib_text.size(), mib);
  if (mib_text.empty() || ec != std::errc() || end != mib_text.data() + mib_text.size() ||
      mib < 0) {
    return InvalidArgument("nvidia-smi: expected '<memory MiB>', got '" + std::string(text) + "'");
  }
  return mib * 1024 * 1024;
}

StatusOr<v1::DeviceInfo> ParseNvidiaSmiLine(std::string_view line, int index) {
  const std::size_t comma = line.rfind(',');
  const std::string_view name = comma == std::string_view::npos ? "" : Trim(line.substr(0, comma));
  const StatusOr<int64_t> bytes = ParseNvidiaSmiMib(
      comma == std::string_view::npos ? std::string_view() : line.substr(comma + 1));
  if (name.empty() || !bytes.ok() || *bytes <= 0) {
    return InvalidArgument("nvidia-smi: expected '<name>, <memory MiB>', got '" +
                           std::string(line) + "'");
  }
  v1::DeviceInfo device;
  device.set_kind("cuda");
  device.set_index(index);
  device.set_name(std::string(name));
  device.set_total_memory_bytes(*bytes);
  return device;
}

namespace {

// The one line `nvidia-smi --query-gpu=QUERY` prints for GPU `index`; errors say what it said.
StatusOr<std::string> QueryNvidiaSmi(int index, const std::string& query,
                                     const std::string& nvidia_smi,
                                     std::chrono::milliseconds timeout) {
  if (index < 0) return InvalidArgument("--gpu: must be >= 0, got " + std::to_string(index));
  process::SpawnSpec spec;
  spec.argv = {nvidia_smi, "--query-gpu=" + query, "--format=csv,noheader,nounits", "-i",
               std::to_string(index)};
  spec.search_path = true;
  std::vector<std::string> out;
  std::string err;
  process::ProcessCallbacks callbacks;
  callbacks.on_stdout_line = [&out](std::string_view line) {
    if (!Trim(line).empty()) out.emplace_back(line);
  };
  // nvidia-smi prints its reasons ("No devices were found") on stdout or stderr.
  callbacks.on_stderr_line = [&err](std::string_view line) { err.append(line).append(" "); };
  const std::string what = "--gpu " + std::to_string(index) + ": " + nvidia_smi;
  auto started = process::ProcessSupervisor::Start(spec, std::move(callbacks));
  if (!started.ok()) return FailedPrecondition(what + ": " + started.status().message());
  std::optional<process::ProcessExit> exit = (*started)->WaitFor(timeout);
  if (!exit) {
    (*started)->Cancel(std::chrono::milliseconds(0));
    const auto ms = timeout.count();
    return Unavailable(
        what + ": no answer within " +
        (ms % 1000 == 0 ? std::to_string(ms / 1000) + " s" : std::to_string(ms) + " ms"));
  }
  if (exit->exit_code != 0) {
    std::string said = err;
    for (const std::string& line : out) said += line + " ";
    return FailedPrecondition(
        what + " failed (exit " + std::to_string(exit->exit_code) +
        (exit->signal != 0 ? ", signal " + std::to_string(exit->signal) : "") +
        "): " + std::string(Trim(said)));
  }
  if (out.size() != 1) {
    return FailedPrecondition(what + ": expected one line for GPU " + std::to_string(index) +
                              ", got " + std::to_string(out.size()));
  }
  return out[0];
}

}  // namespace

StatusOr<v1::DeviceInfo> DetectGpuDevice(int index, const std::string& nvidia_smi) {
  QLORAD_ASSIGN_OR_RETURN(const std::string line, QueryNvidiaSmi(index, "name,memory.total",
                                                                 nvidia_smi, kNvidiaSmiTimeout));
  auto device = ParseNvidiaSmiLine(line, index);
  if (!device.ok()) {
    return FailedPrecondition("--gpu " + std::to_string(index) + ": " + nvidia_smi + ": " +
                              device.status().message());
  }
  return device;
}

StatusOr<int64_t> DetectGpuFreeMemory(int index, const std::string& nvidia_smi) {
  QLORAD_ASSIGN_OR_RETURN(const std::string line,
                          QueryNvidiaSmi(index, "memory.free", nvidia_smi, kFreeProbeTimeout));
  auto bytes = ParseNvidiaSmiMib(line);
  if (!bytes.ok()) {
    return FailedPrecondition("--gpu " + std::to_string(index) + ": " + nvidia_smi + ": " +
                              bytes.status().message());
  }
  return bytes;
}

}  // namespace qlorad::agent
