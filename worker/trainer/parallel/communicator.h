// Collective communication between the ranks of one job, behind an abstract interface so the
// sharding code never names a backend: c10d's Gloo on CPUs, NCCL on GPUs, or a local stand-in
// for a world of one. Every call is asynchronous and returns a work handle; Wait() turns a
// backend failure (a dead peer, a timeout) into a Status that names the rank and the collective.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"

namespace qlorad::trainer::parallel {

class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective finished (on CUDA: until it is ordered on the current stream).
  virtual Status Wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;  // "gloo", "nccl", "local"

  // output [world_size * n] <- every rank's input [n], in rank order.
  virtual std::unique_ptr<Work> AllGather(at::Tensor& output, at::Tensor& input) = 0;
  // output [n] <- this rank's n-element slice of the sum of every rank's input [world_size * n].
  virtual std::unique_ptr<Work> ReduceScatterSum(at::Tensor& output, at::Tensor& input) = 0;
  virtual std::unique_ptr<Work> AllReduceSum(at::Tensor& tensor) = 0;
  virtual std::unique_ptr<Work> Broadcast(at::Tensor& tensor, int root) = 0;
  virtual std::unique_ptr<Work> Barrier() = 0;

  // Bytes that ring collectives move into this rank for the calls made so far, from the tensors
  // they were given: an all-gather or reduce-scatter (w-1)/w of the full tensor, an all-reduce
  // twice that, a broadcast the tensor on every rank but the root. bench/parallel prints this
  // next to the traffic it computes from the model's shapes.
  int64_t bytes_received() const { return bytes_received_.load(); }

 protected:
  void CountReceived(int64_t bytes) { bytes_received_ += bytes; }

 private:
  std::atomic<int64_t> bytes_received_{0};  // backward may issue collectives on its own thread
};

struct RendezvousOptions {
  std::string address;  // HOST:PORT of the TCPStore; rank 0 listens on PORT
  int rank = 0;
  int world_size = 1;
  at::Device device{at::kCPU};  // CPU -> Gloo, CUDA -> NCCL
  // How long the ranks wait for each other to join (the store); ranks start at different times.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // How long one collective may wait for a peer (parallel.timeout_s) before it fails: Gloo's
  // wait() throws; NCCL's own watchdog tears the process down (see c10d_nccl.cc).
  std::chrono::milliseconds collective_timeout{std::chrono::minutes(10)};
};

// A world of one needs no rendezvous: collectives are copies.
std::unique_ptr<Communicator> MakeLocalCommunicator(at::Device device);

// Joins the job's process group. Errors name this rank and the address it tried.
StatusOr<std::unique_ptr<Communicator>> Rendezvous(const RendezvousOptions& options);

// Waits on a handle inside code that cannot return a Status (autograd backward): throws.
void WaitOrThrow(std::unique_ptr<Work> work);

}  // namespace qlorad::trainer::parallel
