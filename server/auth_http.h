// Authentication on the coordinator's HTTP side (auth.h has the roles). A request carries its
// token as `Authorization: Bearer TOKEN` (scripts, Prometheus) or as the `qlorad_token` cookie
// that POST /login sets from the sign-in form (browsers). The cookie is HttpOnly and
// SameSite=Strict (Secure under TLS): scripts cannot read it and other sites' pages cannot send
// it, which with the cancel route's JSON-only rule keeps cross-site requests out.
//
// Cross-site request forgery, in depth beyond SameSite (older browsers, a sibling site of the
// same registrable domain, and the sign-in form, which no session cookie guards yet): every POST
// that changes something (sign-in, sign-out, cancel) must echo a per-browser token, the double-
// submit pattern. GET /login and the job pages set it in the `qlorad_csrf` cookie (HttpOnly,
// SameSite=Strict, Secure under TLS) and put the same value in the page (the form's hidden `csrf`
// field, the cancel button's data-csrf, which the script sends as X-CSRF-Token). Another site can
// at most make a browser send the cookie; it can neither read it nor the page to echo it. A
// request that brings its own credential in an Authorization header (scripts, curl) needs no
// token: a browser never adds that header by itself.
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
inline constexpr char kCsrfCookie[] = "qlorad_csrf";
inline constexpr char kCsrfField[] = "csrf";           // the hidden field of the forms
inline constexpr char kCsrfHeader[] = "X-CSRF-Token";  // what the pages' scripts send

// The caller of a request: the Authorization header first, else the cookie.
StatusOr<Principal> HttpCaller(const httplib::Request& req, const Authenticator& auth);

// The browser's CSRF token: its qlorad_csrf cookie when that is well formed, else a new one,
// set as the cookie on `res`. INTERNAL if OpenSSL's generator fails.
StatusOr<std::string> CsrfToken(const httplib::Request& req, httplib::Response& res, bool secure);

// OK when the request has an Authorization header, or its `csrf` form field or X-CSRF-Token
// header equals its qlorad_csrf cookie; else PERMISSION_DENIED saying what is missing (the
// routes answer 403 with it).
Status CheckCsrf(const httplib::Request& req);

// GET /login (the form), POST /login (checks the token, sets the cookie, back to /) and
// POST /logout (clears it); both POSTs pass CheckCsrf first. `secure`: served over TLS, so the
// cookie is Secure.
void AddLoginRoutes(httplib::Server& server, const Authenticator& auth, bool secure);

}  // namespace qlorad::server
