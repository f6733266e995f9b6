#include "worker/trainer/parallel/communicator.h"

#include <charconv>
#include <sstream>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "common/process/host_address.h"
#include "worker/trainer/parallel/c10d_backends.h"

namespace qlorad::trainer::parallel {

namespace {

// "5", "0.5": as the spec would say it.
std::string FormatSeconds(std::chrono::milliseconds duration) {
  std::ostringstream out;
  out << static_cast<double>(duration.count()) / 1000.0;
  return out.str();
}

class DoneWork : public Work {
 public:
  Status Wait() override { return Status::Ok(); }
};

class LocalCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "local"; }
  std::unique_ptr<Work> AllGather(at::Tensor& output, at::Tensor& input) override {
    output.copy_(input);
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> ReduceScatterSum(at::Tensor& output, at::Tensor& input) override {
    output.copy_(input);
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> AllReduceSum(at::Tensor&) override { return std::make_unique<DoneWork>(); }
  std::unique_ptr<Work> Broadcast(at::Tensor&, int) override {
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> Barrier() override { return std::make_unique<DoneWork>(); }
};

class C10dWork : public Work {
 public:
  C10dWork(c10::intrusive_ptr<c10d::Work> work, std::string what, std::vector<at::Tensor> keep)
      : work_(std::move(work)), what_(std::move(what)), keep_(std::move(keep)) {}
  Status Wait() override {
    try {
      work_->wait();
    } catch (const std::exception& e) {
      return Unavailable(what_ + " failed: " + e.what());
    }
    return Status::Ok();
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  std::string what_;
  std::vector<at::Tensor> keep_;  // the buffers must outlive the collective
};

class C10dCommunicator : public Communicator {
 public:
  C10dCommunicator(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::Backend> pg,
                   int rank, int world_size, std::chrono::milliseconds timeout)
      : store_(std::move(store)),
        pg_(std::move(pg)),
        rank_(rank),
        world_size_(world_size),
        timeout_(timeout) {}
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return pg_->getBackendName(); }

  std::unique_ptr<Work> AllGather(at::Tensor& output, at::Tensor& input) override {
    CountReceived(RingShare(output.nbytes()));
    return Wrap("all-gather", pg_->_allgather_base(output, input), {output, input});
  }
  std::unique_ptr<Work> ReduceScatterSum(at::Tensor& output, at::Tensor& input) override {
    CountReceived(RingShare(input.nbytes()));
    return Wrap("reduce-scatter", pg_->_reduce_scatter_base(output, input), {output, input});
  }
  std::unique_ptr<Work> AllReduceSum(at::Tensor& tensor) override {
    CountReceived(2 * RingShare(tensor.nbytes()));  // reduce-scatter, then all-gather
    std::vector<at::Tensor> tensors{tensor};
    return Wrap("all-reduce", pg_->allreduce(tensors), tensors);
  }
  std::unique_ptr<Work> Broadcast(at::Tensor& tensor, int root) override {
    std::vector<at::Tensor> tensors{tensor};
    if (rank_ != root) CountReceived(static_cast<int64_t>(tensor.nbytes()));
    c10d::BroadcastOptions options;
    options.rootRank = root;
    return Wrap("broadcast", pg_->broadcast(tensors, options), tensors);
  }
  std::unique_ptr<Work> Barrier() override { return Wrap("barrier", pg_->barrier(), {}); }

 private:
  // The part of a full-size tensor that comes from the other ranks.
  int64_t RingShare(size_t full_bytes) const {
    return static_cast<int64_t>(full_bytes) * (world_size_ - 1) / world_size_;
  }

  std::unique_ptr<Work> Wrap(const std::string& what, c10::intrusive_ptr<c10d::Work> work,
                             std::vector<at::Tensor> keep) {
    // The timeout is in the message: a peer that stopped answering shows up as a timed-out
    // collective here, and the user needs the spec field that bounds it.
    return std::make_unique<C10dWork>(
        std::move(work),
        "rank " + std::to_string(rank_) + " of " + std::to_string(world_size_) + ": " + backend() +
            " " + what + " (parallel.timeout_s: " + FormatSeconds(timeout_) + ")",
        std::move(keep));
  }

  c10::intrusive_ptr<c10d::Store> store_;  // the process group keeps using it
  c10::intrusive_ptr<c10d::Backend> pg_;
  int rank_;
  int world_size_;
  std::chrono::milliseconds timeout_;
};

StatusOr<std::pair<std::string, uint16_t>> SplitAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  uint16_t port = 0;
  if (colon == std::string::npos || colon == 0) {
    return InvalidArgument("--rendezvous: expected HOST:PORT, got '" + address + "'");
  }
  const char* first = address.data() + colon + 1;
  const char* last = address.data() + address.size();
  const auto [end, ec] = std::from_chars(first, last, port);
  if (ec != std::errc() || end != last || port == 0) {
    return InvalidArgument("--rendezvous: bad port in '" + address + "'");
  }
  return std::make_pair(address.substr(0, colon), port);
}

}  // namespace

std::unique_ptr<Communicator> MakeLocalCommunicator(at::Device) {
  return std::make_unique<LocalCommunicator>();
}

StatusOr<std::unique_ptr<Communicator>> Rendezvous(const RendezvousOptions& options) {
  QLORAD_ASSIGN_OR_RETURN(const auto host_port, SplitAddress(options.address));
  const std::string who =
      "rank " + std::to_string(options.rank) + " of " + std::to_string(options.world_size);
  // Rank 0's store listens on every address, and its own client reaches it over loopback: it
  // needs no name resolved. The others resolve rank 0's host here, within parallel.timeout_s:
  // the store's connect would ask the resolver again and again for its whole timeout (minutes,
  // as ranks start at different times), a hang past the limit the job set for waiting on a peer.
  std::string store_host = "127.0.0.1";
  if (options.rank > 0) {
    StatusOr<std::string> resolved =
        qlorad::process::ResolveHost(host_port.first, options.collective_timeout);
    if (!resolved.ok()) {
      return Unavailable(who + ": cannot resolve the rendezvous host '" + host_port.first +
                         "' within parallel.timeout_s (" +
                         FormatSeconds(options.collective_timeout) +
                         " s): " + resolved.status().message());
    }
    store_host = *resolved;
  }
  c10::intrusive_ptr<c10d::Store> store;
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = host_port.second;
    store_options.isServer = options.rank == 0;
    store_options.numWorkers = options.world_size;
    store_options.timeout = options.timeout;
    store = c10::make_intrusive<c10d::TCPStore>(store_host, store_options);
  } catch (const std::exception& e) {
    return Unavailable(who + ": rendezvous store at " + options.address + " failed within " +
                       std::to_string(options.timeout.count() / 1000) + " s (" +
                       (options.rank == 0 ? "listening" : "connecting") + "): " + e.what());
  }
  try {
    c10::intrusive_ptr<c10d::Backend> pg;
    if (options.device.is_cuda()) {
#ifdef QLORAD_HAVE_NCCL
      pg = MakeNcclBackend(store, options.rank, options.world_size, options.collective_timeout);
#else
      return FailedPrecondition(who + ": CUDA ranks need NCCL, which this build lacks");
#endif
    } else {
#ifdef QLORAD_HAVE_GLOO
      pg = MakeGlooBackend(store, options.rank > 0 ? store_host : "", options.rank,
                           options.world_size, options.collective_timeout);
#else
      return FailedPrecondition(
          who + ": CPU ranks need Gloo, and this build found no gloo headers (libgloo-dev)");
#endif
    }
    return std::unique_ptr<Communicator>(std::make_unique<C10dCommunicator>(
        store, pg, options.rank, options.world_size, options.collective_timeout));
  } catch (const std::exception& e) {
    return Unavailable(who + ": process group over " + options.address + " failed: " + e.what());
  }
}

void WaitOrThrow(std::unique_ptr<Work> work) {
  const Status status = work->Wait();
  TORCH_CHECK(status.ok(), status.message());
}

}  // namespace qlorad::trainer::parallel
