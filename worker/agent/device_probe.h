// What device this agent represents, reported when it registers. The agent never links LibTorch,
// so a GPU is described by nvidia-smi and a CPU by /proc.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "qlorad/v1/common.pb.h"

namespace qlorad::agent {

// kind "cpu", index 0, the CPU model name and the machine's total memory.
StatusOr<v1::DeviceInfo> DetectCpuDevice(const std::string& cpuinfo_path = "/proc/cpuinfo",
                                         const std::string& meminfo_path = "/proc/meminfo");

// kind "cuda": asks `nvidia_smi --query-gpu=name,memory.total --format=csv,noheader,nounits -i N`.
StatusOr<v1::DeviceInfo> DetectGpuDevice(int index, const std::string& nvidia_smi = "nvidia-smi");

// GPU N's free memory in bytes: `nvidia_smi --query-gpu=memory.free ...` (answers within 2 s).
// Asked while no trainer of this agent runs, it is the total less other processes' use.
StatusOr<int64_t> DetectGpuFreeMemory(int index, const std::string& nvidia_smi = "nvidia-smi");

// The parsers behind them, for tests. Errors name the file or the tool.
std::string CpuModelName(std::string_view cpuinfo);
StatusOr<int64_t> ParseMemTotalBytes(std::string_view meminfo);
// "NVIDIA H100 80GB HBM3, 81559" (memory in MiB).
StatusOr<v1::DeviceInfo> ParseNvidiaSmiLine(std::string_view line, int index);
// "1024" (MiB, as --query-gpu=memory.free prints it) in bytes.
StatusOr<int64_t> ParseNvidiaSmiMib(std::string_view text);

}  // namespace qlorad::agent
