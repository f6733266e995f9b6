#include "server/auth_tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/read_file.h"

namespace qlorad::server {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

std::unique_ptr<BIO, BioFree> MemoryBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of a PEM file; INVALID_ARGUMENT naming the flag if there is none.
StatusOr<std::unique_ptr<X509, X509Free>> FirstCertificate(const std::string& pem,
                                                           const std::string& path,
                                                           const std::string& flag) {
  auto bio = MemoryBio(pem);
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!cert) return InvalidArgument(flag + ": " + path + " holds no PEM certificate");
  return cert;
}

}  // namespace

StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(
    const SecurityOptions& security) {
  if (!security.tls()) return grpc::InsecureServerCredentials();
  QLORAD_ASSIGN_OR_RETURN(std::string cert_pem, ReadFileForFlag(security.tls_cert, "--tls-cert"));
  QLORAD_ASSIGN_OR_RETURN(std::string key_pem, ReadFileForFlag(security.tls_key, "--tls-key"));
  QLORAD_ASSIGN_OR_RETURN(auto cert, FirstCertificate(cert_pem, security.tls_cert, "--tls-cert"));
  auto key_bio = MemoryBio(key_pem);
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key) {
    return InvalidArgument("--tls-key: " + security.tls_key +
                           " holds no PEM private key (or it is encrypted)");
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return InvalidArgument("--tls-key: " + security.tls_key + " is not the key of --tls-cert " +
                           security.tls_cert);
  }

  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl.pem_key_cert_pairs.push_back({key_pem, cert_pem});
  if (!security.tls_client_ca.empty()) {
    QLORAD_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                            ReadFileForFlag(security.tls_client_ca, "--tls-client-ca"));
    QLORAD_RETURN_IF_ERROR(
        FirstCertificate(ssl.pem_root_certs, security.tls_client_ca, "--tls-client-ca").status());
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace qlorad::server
