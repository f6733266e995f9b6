#include "server/auth_token.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>

namespace qlorad::server {
namespace {

template <size_t N>
std::string Hex(const std::array<unsigned char, N>& bytes, size_t size = N) {
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) out += fmt::format("{:02x}", bytes[i]);
  return out;
}

// 32 bytes of OpenSSL's CSPRNG as 64 hex digits.
StatusOr<std::string> RandomHex32() {
  std::array<unsigned char, 32> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    return Internal("OpenSSL RAND_bytes failed: cannot make a token");
  }
  return Hex(bytes);
}

}  // namespace

StatusOr<std::string> NewTokenSecret() {
  QLORAD_ASSIGN_OR_RETURN(std::string hex, RandomHex32());
  return kTokenPrefix + hex;
}

StatusOr<std::string> NewCsrfToken() {
  return RandomHex32();
}

std::string TokenHash(const std::string& token) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  // EVP_Digest with SHA-256 cannot fail on a valid buffer; a failure leaves size 0, which hashes
  // every token to "", a value no stored token has.
  EVP_Digest(token.data(), token.size(), digest.data(), &size, EVP_sha256(), nullptr);
  return Hex(digest, size);
}

}  // namespace qlorad::server
