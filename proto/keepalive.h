// HTTP/2 keepalive for qlorad's gRPC connections, one place for both ends so that they agree:
// the coordinator refuses pings more frequent than it permits (GOAWAY "too_many_pings"), so the
// clients' interval must stay above the server's floor.
//
// Why at all: metric and log streams, and a worker's Assignments stream, sit idle for as long as
// a job is queued or quiet, and a NAT or a load balancer drops connections idle for minutes
// without telling either end. Pings keep them open, and a peer that vanished (a client's laptop
// closed, a worker host powered off) is noticed within a minute, which frees its stream slot
// (--max-streams) and its worker entry instead of waiting for the kernel's TCP timeout (hours).
#pragma once

#include <grpcpp/grpcpp.h>

namespace qlorad {

// Clients (qloractl, qlorad-worker; the Python client uses the same numbers): a ping after 30 s
// without traffic, the connection dropped when its answer takes over 10 s, on idle streams too.
inline void SetClientKeepalive(grpc::ChannelArguments& args) {
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // 0: no cap on pings while no data flows (default 2), which would end keepalive on a long
  // quiet stream.
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
}

// The coordinator: pings each client after 60 s of silence, and accepts client pings as often
// as every 10 s (a third of the clients' interval, so jitter never earns a strike).
inline void SetServerKeepalive(grpc::ServerBuilder& builder) {
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
}

}  // namespace qlorad
