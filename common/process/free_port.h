// A TCP port that is free on this machine, for the c10d TCPStore where a job's ranks meet.
#pragma once

#include "common/status.h"

namespace qlorad::process {

// Binds an ephemeral port on every local IPv4 address (where the store will listen), reads back
// the port the kernel chose and releases it. Racy by nature: another process may take the port
// before rank 0's store binds it; the trainer then reports the clash and the job is retried.
StatusOr<int> FreeTcpPort();

// An ephemeral port held for as long as this object lives: bound on every IPv4 address with
// SO_REUSEADDR but never listening, so the kernel hands it to no other socket (no ephemeral
// choice, no plain bind), while a listener that also sets SO_REUSEADDR, as c10d's TCPStore does,
// may still bind and listen on it. The worker agent holds one for the stores of the jobs whose
// rank 0 it runs: the port is then free on rank 0's own host, which FreeTcpPort on the
// coordinator's host cannot promise.
class PortReservation {
 public:
  static StatusOr<PortReservation> Reserve();
  PortReservation(PortReservation&& other) noexcept;
  PortReservation& operator=(PortReservation&& other) noexcept;
  PortReservation(const PortReservation&) = delete;
  PortReservation& operator=(const PortReservation&) = delete;
  ~PortReservation();

  int port() const { return port_; }

 private:
  PortReservation(int fd, int port) : fd_(fd), port_(port) {}
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace qlorad::process
