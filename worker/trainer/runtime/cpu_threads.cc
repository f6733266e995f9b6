#include "worker/trainer/runtime/cpu_threads.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace qlorad::trainer {

int CpuThreadsPerRank(bool cpu_device, int host_cpus, int local_ranks) {
  if (cpu_device) return 1;
  return std::max(1, host_cpus / std::max(1, local_ranks));
}

int HostCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

int LocalRanks() {
  if (const char* value = std::getenv("QLORAD_LOCAL_WORLD_SIZE")) {
    const int ranks = std::atoi(value);
    if (ranks > 0) return ranks;
  }
  // One directory per GPU, whatever CUDA_VISIBLE_DEVICES hides from this process.
  std::error_code error;
  int gpus = 0;
  for (std::filesystem::directory_iterator it("/proc/driver/nvidia/gpus", error), end;
       !error && it != end; it.increment(error)) {
    ++gpus;
  }
  return std::max(1, gpus);
}

}  // namespace qlorad::trainer
