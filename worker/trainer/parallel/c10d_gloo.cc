// ProcessGroup*.hpp declares nothing without USE_C10D_GLOO; TorchConfig's flags set it, this is
// for builds whose flags do not.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "common/process/host_address.h"
#include "worker/trainer/parallel/c10d_backends.h"

namespace qlorad::trainer::parallel {
namespace {

// Where rank 1 leaves the address it reaches rank 0's host from (a key of the job's store,
// apart from the "<n>/" keys Gloo's own rendezvous uses).
constexpr char kPeerAddressKey[] = "qlorad/gloo/rank1-address";

std::string RouteOrThrow(const std::string& address) {
  StatusOr<std::string> local = qlorad::process::LocalAddressTowards(address);
  if (!local.ok()) throw std::runtime_error("gloo: " + local.status().message());
  return *local;
}

// The address this rank's Gloo device listens on and tells its peers about: the one that routes
// to the other ranks. Not the one this host's name resolves to (LibTorch's createDefaultDevice),
// which is loopback on many machines (Debian's "127.0.1.1 <hostname>") and, on a machine with
// several networks, not necessarily the one the others reach. A rank > 0 routes to rank 0's host
// (the rendezvous, resolved); rank 0, whose rendezvous may be its own name and so loopback,
// routes to the address rank 1 came from, which rank 1 leaves in the store. Ranks on one host
// get loopback both ways, and so does a world of one (a service job's single rank, which has a
// rendezvous too), which has no peer to reach.
std::string ListeningAddress(c10d::Store& store, const std::string& rendezvous_address, int rank,
                             int size) {
  if (size == 1) return "127.0.0.1";
  if (rank > 0) {
    const std::string local = RouteOrThrow(rendezvous_address);
    if (rank == 1) store.set(kPeerAddressKey, std::vector<uint8_t>(local.begin(), local.end()));
    return local;
  }
  const std::vector<uint8_t> peer = store.get(kPeerAddressKey);  // waits for rank 1
  return RouteOrThrow(std::string(peer.begin(), peer.end()));
}

}  // namespace

c10::intrusive_ptr<c10d::Backend> MakeGlooBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  const std::string& rendezvous_address, int rank,
                                                  int size, std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // GLOO_SOCKET_IFNAME names the interfaces outright, one device each, as torch.distributed and
  // LibTorch's Options::create_default read it: the operator's word over our routing guess.
  const char* interfaces = std::getenv("GLOO_SOCKET_IFNAME");
  if (interfaces != nullptr && *interfaces != '\0') {
    std::istringstream names(interfaces);
    for (std::string name; std::getline(names, name, ',');) {
      if (!name.empty()) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
      }
    }
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(
        ListeningAddress(*store, rendezvous_address, rank, size)));
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
}

}  // namespace qlorad::trainer::parallel
