// How many threads torch's CPU (intra-op, OpenMP) pool gets when OMP_NUM_THREADS does not say.
//
// That pool busy-waits at every barrier, so it collapses when its threads outnumber the cores
// they run on: on a busy 2-core host 10 demo steps took 2.2 s of CPU with one thread and 15-19 s
// with two; on a 32-core host with two GPU ranks of fsdp with CPU offload (AdamW steps on the
// CPU), torch's default of one thread per core in each rank made a step 3.8 s against 0.13 s
// with 4 threads (bench/results/2026-11-26-h200x2-818c6a0-offload_threads.txt).
#pragma once

namespace qlorad::trainer {

// `cpu_device`: the run computes on the CPU (it shares the host with other trainers of a --cpu
// worker, or a build: one thread). Otherwise each of `local_ranks` GPU ranks on the host gets an
// equal share of its `host_cpus`.
int CpuThreadsPerRank(bool cpu_device, int host_cpus, int local_ranks);

// The CPUs this process may run on (its affinity mask).
int HostCpus();

// Ranks sharing this host: QLORAD_LOCAL_WORLD_SIZE (set by `qlorad-train launch`), else one per
// NVIDIA GPU the host has (a worker runs one trainer per GPU), else 1.
int LocalRanks();

}  // namespace qlorad::trainer
