// A TCP port that is free on this machine, for the c10d TCPStore where a job's ranks meet.
#pragma once

#include "common/status.h"

namespace qlorad::process {

// Binds an ephemeral port on every local IPv4 address (where the store will listen), reads back
// the port the kernel chose and releases it. Racy by nature: another process may take the port
// before rank 0's store binds it; the trainer then reports the clash and the job is retried.
StatusOr<int> FreeTcpPort();

}  // namespace qlorad::process
