// How the C++ clients of the coordinator (qloractl, qlorad-worker) dial it: plaintext or TLS
// (trusting a CA file, or the system's roots), a client certificate for mutual TLS, and a bearer
// token on every call (`authorization: Bearer TOKEN`, added by a channel interceptor so no call
// site can forget it). server/auth.h says what the coordinator does with them.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "common/status.h"

namespace qlorad::connect {

// What the user gave: file paths and the flags they came from (for errors).
struct SecurityFlags {
  std::string token;      // "" : none (a coordinator under --insecure-local on loopback)
  bool tls = false;       // implied by ca_file and cert_file
  std::string ca_file;    // PEM: the CA the coordinator's certificate chains to; "" system roots
  std::string cert_file;  // PEM client certificate and key, for mutual TLS
  std::string key_file;
  std::string ca_flag = "--ca-file";
  std::string cert_flag = "--cert";
  std::string key_flag = "--key";
};

// The same, loaded: the files' PEM text.
struct ChannelSecurity {
  std::string token;
  bool tls = false;
  std::string ca_pem;  // "" : the system's roots
  std::string cert_pem;
  std::string key_pem;
};

// Reads and checks the files. INVALID_ARGUMENT naming the flag when a file cannot be read or is
// not PEM, or when only one of cert and key is given.
StatusOr<ChannelSecurity> LoadSecurity(const SecurityFlags& flags);

std::shared_ptr<grpc::Channel> Connect(const std::string& address, const ChannelSecurity& security,
                                       const grpc::ChannelArguments& args = {});

}  // namespace qlorad::connect
