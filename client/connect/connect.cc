#include "client/connect/connect.h"

#include <grpcpp/support/client_interceptor.h>

#include "common/read_file.h"

namespace qlorad::connect {
namespace {

namespace exp = grpc::experimental;

class BearerTokenInterceptor final : public exp::Interceptor {
 public:
  explicit BearerTokenInterceptor(std::string header) : header_(std::move(header)) {}

  void Intercept(exp::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            exp::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", header_});
    }
    methods->Proceed();
  }

 private:
  const std::string header_;
};

class BearerTokenFactory final : public exp::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenFactory(std::string token) : header_("Bearer " + std::move(token)) {}
  exp::Interceptor* CreateClientInterceptor(exp::ClientRpcInfo*) override {
    return new BearerTokenInterceptor(header_);
  }

 private:
  const std::string header_;
};

// A PEM file's text, checked to look like PEM: a DER file or a wrong path otherwise fails deep
// inside the TLS handshake with a message that names neither.
StatusOr<std::string> ReadPem(const std::string& path, const std::string& flag) {
  QLORAD_ASSIGN_OR_RETURN(std::string text, ReadFileForFlag(path, flag));
  if (text.find("-----BEGIN ") == std::string::npos) {
    return InvalidArgument(flag + ": " + path + " is not a PEM file (no -----BEGIN line)");
  }
  return text;
}

}  // namespace

StatusOr<ChannelSecurity> LoadSecurity(const SecurityFlags& flags) {
  ChannelSecurity security;
  security.token = flags.token;
  security.tls = flags.tls || !flags.ca_file.empty() || !flags.cert_file.empty();
  if (flags.cert_file.empty() != flags.key_file.empty()) {
    return InvalidArgument(flags.cert_flag + " and " + flags.key_flag +
                           ": give both (PEM files) or neither");
  }
  if (!flags.ca_file.empty()) {
    QLORAD_ASSIGN_OR_RETURN(security.ca_pem, ReadPem(flags.ca_file, flags.ca_flag));
  }
  if (!flags.cert_file.empty()) {
    QLORAD_ASSIGN_OR_RETURN(security.cert_pem, ReadPem(flags.cert_file, flags.cert_flag));
    QLORAD_ASSIGN_OR_RETURN(security.key_pem, ReadPem(flags.key_file, flags.key_flag));
  }
  return security;
}

std::shared_ptr<grpc::Channel> Connect(const std::string& address, const ChannelSecurity& security,
                                       const grpc::ChannelArguments& args) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (security.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = security.ca_pem;
    ssl.pem_cert_chain = security.cert_pem;
    ssl.pem_private_key = security.key_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  std::vector<std::unique_ptr<exp::ClientInterceptorFactoryInterface>> interceptors;
  if (!security.token.empty()) {
    interceptors.push_back(std::make_unique<BearerTokenFactory>(security.token));
  }
  return exp::CreateCustomChannelWithInterceptors(address, credentials, args,
                                                  std::move(interceptors));
}

}  // namespace qlorad::connect
