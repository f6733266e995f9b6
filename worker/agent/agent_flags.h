// qlorad-worker's command line, and the defaults that depend on the machine (name, trainer path).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/agent/agent.h"

namespace qlorad::agent {

struct AgentFlags {
  std::string coordinator = "127.0.0.1:50051";
  std::optional<int> gpu;  // nullopt: --cpu
  std::string name;        // empty: <hostname>-cpu or <hostname>-gpu<N>
  // How the other hosts reach this one (a name or an IPv4 address): the rendezvous host of the
  // multi-rank jobs whose rank 0 this worker runs. Empty: this host's name.
  std::string advertise_address;
  std::string work_dir = "./qlorad-work";
  // Where the spec's paths may point (common/path_sandbox.h); empty: the work dir.
  std::vector<std::string> read_roots;
  std::string write_root;
  std::string trainer;  // empty: qlorad-train next to this executable
  double grace_period_s = 10;
  std::string log_level = "info";
  // --tls, --ca-file, --cert, --key (client/connect/connect.h). The token is the credential.
  connect::SecurityFlags security;
  std::string enroll_token;     // --enroll-token, or QLORAD_ENROLL_TOKEN
  std::string credential_file;  // --credential-file; empty: <work-dir>/worker-credential
  // Test hook: report a GPU of this many bytes to the coordinator while training on the CPU, so
  // tests without a GPU can check placement by memory. Never for real use.
  std::optional<int64_t> test_gpu_memory_bytes;
  // Test hook beside it: report this much of that GPU free while idle (a real GPU's free memory
  // comes from nvidia-smi). Its trainers are not told: QLORAD_TEST_FREE_MEMORY_BYTES does that.
  std::optional<int64_t> test_gpu_free_memory_bytes;
};

// Parses argv. Returns nullopt to go on; otherwise the exit code (0 after --help, 2 for a usage
// error; CLI11 has printed the message).
std::optional<int> ParseAgentFlags(int argc, char** argv, AgentFlags* flags);

// Fills in the defaults, creates the work directory and finds the device. Errors name the flag.
StatusOr<AgentOptions> ResolveAgentOptions(const AgentFlags& flags);

}  // namespace qlorad::agent
