// Authentication on the coordinator's HTTP side (auth.h has the roles). A request carries its
// token as `Authorization: Bearer TOKEN` (scripts, Prometheus) or as the `qlorad_token` cookie
// that POST /login sets from the sign-in form (browsers). The cookie is HttpOnly and
// SameSite=Strict (Secure under TLS): scripts cannot read it and other sites' pages cannot send
// it, which with the cancel route's JSON-only rule keeps cross-site requests out.
#pragma once

#include <string>

#include "server/auth.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace qlorad::server {

inline constexpr char kSessionCookie[] = "qlorad_token";

// The caller of a request: the Authorization header first, else the cookie.
StatusOr<Principal> HttpCaller(const httplib::Request& req, const Authenticator& auth);

// GET /login (the form), POST /login (checks the token, sets the cookie, back to /) and
// POST /logout (clears it). `secure`: served over TLS, so the cookie is Secure.
void AddLoginRoutes(httplib::Server& server, const Authenticator& auth, bool secure);

}  // namespace qlorad::server
