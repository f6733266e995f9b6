// ProcessGroup*.hpp declares nothing without USE_C10D_GLOO; TorchConfig's flags set it, this is
// for builds whose flags do not.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "worker/trainer/parallel/c10d_backends.h"

namespace qlorad::trainer::parallel {

c10::intrusive_ptr<c10d::Backend> MakeGlooBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  const std::string& hostname, int rank, int size,
                                                  std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // A loopback rendezvous means every rank is on this host: bind there. Otherwise the rendezvous
  // host is rank 0's, not necessarily ours, so let Gloo pick this host's own address.
  const bool loopback = hostname == "localhost" || hostname.rfind("127.", 0) == 0;
  options->devices.push_back(loopback ? c10d::ProcessGroupGloo::createDeviceForHostname(hostname)
                                      : c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
}

}  // namespace qlorad::trainer::parallel
