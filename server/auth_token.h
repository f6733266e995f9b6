// Bearer tokens: made from OpenSSL's CSPRNG, stored only as their SHA-256 (a token is 32 random
// bytes, so an unsalted fast hash is enough: there is nothing to guess from it). Who holds which
// token is in the store's tokens table (store.h); roles are in auth.h.
#pragma once

#include <string>

#include "common/status.h"

namespace qlorad::server {

// Every token starts with this, so a leaked one is easy to grep for and to tell from other secrets.
inline constexpr char kTokenPrefix[] = "qlorad_";

// "qlorad_" + 64 hex digits of fresh randomness. INTERNAL if OpenSSL's generator fails.
StatusOr<std::string> NewTokenSecret();

// 64 hex digits of fresh randomness, no prefix: a dashboard CSRF token (auth_http.h), which is
// no credential. INTERNAL if OpenSSL's generator fails.
StatusOr<std::string> NewCsrfToken();

// Hex SHA-256 of the token as given: what the store keeps and looks tokens up by.
std::string TokenHash(const std::string& token);

}  // namespace qlorad::server
