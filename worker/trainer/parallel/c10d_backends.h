// Constructors of LibTorch's c10d process groups, one translation unit each: Gloo's needs the gloo
// headers (absent on hosts with only the torch wheel), NCCL's needs CUDA. CMake compiles each only
// where it can (QLORAD_HAVE_GLOO, QLORAD_HAVE_NCCL); Rendezvous reports a missing one by name.
#pragma once

#include <chrono>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace qlorad::trainer::parallel {

#ifdef QLORAD_HAVE_GLOO
// Gloo over TCP, listening on the local address that routes to the other ranks, or on the
// interfaces GLOO_SOCKET_IFNAME lists. `rendezvous_address`: rank 0's host as this rank resolved
// it (numeric; empty on rank 0).
c10::intrusive_ptr<c10d::Backend> MakeGlooBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  const std::string& rendezvous_address, int rank,
                                                  int size, std::chrono::milliseconds timeout);
#endif

#ifdef QLORAD_HAVE_NCCL
c10::intrusive_ptr<c10d::Backend> MakeNcclBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  int rank, int size,
                                                  std::chrono::milliseconds timeout);
#endif

}  // namespace qlorad::trainer::parallel
