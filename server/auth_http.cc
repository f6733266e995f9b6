#include "server/auth_http.h"

#include <httplib.h>
#include <openssl/crypto.h>

#include "server/auth_token.h"
#include "server/dashboard_pages.h"

namespace qlorad::server {
namespace {

// The value of one cookie in a Cookie header ("a=1; qlorad_token=...; b=2"), or "".
std::string CookieValue(const std::string& header, const std::string& name) {
  size_t start = 0;
  while (start < header.size()) {
    size_t end = header.find(';', start);
    if (end == std::string::npos) end = header.size();
    const size_t first = header.find_first_not_of(' ', start);
    if (first < end && header.compare(first, name.size() + 1, name + "=") == 0) {
      return header.substr(first + name.size() + 1, end - first - name.size() - 1);
    }
    start = end + 1;
  }
  return "";
}

std::string CookieHeader(const char* name, const std::string& value, bool secure, bool clear) {
  return std::string(name) + "=" + value + "; Path=/; HttpOnly; SameSite=Strict" +
         (secure ? "; Secure" : "") + (clear ? "; Max-Age=0" : "");
}

// What NewCsrfToken makes: 64 lowercase hex digits. Anything else in the cookie is replaced.
bool WellFormedCsrf(const std::string& token) {
  return token.size() == 64 && token.find_first_not_of("0123456789abcdef") == std::string::npos;
}

void ReplyLoginPage(const httplib::Request& req, httplib::Response& res, bool secure, int status,
                    const std::string& error) {
  auto csrf = CsrfToken(req, res, secure);
  res.status = csrf.ok() ? status : 500;
  res.set_header("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'");
  res.set_content(
      csrf.ok() ? LoginPageHtml(error, *csrf) : ErrorPageHtml(500, csrf.status().message()),
      "text/html; charset=utf-8");
}

}  // namespace

StatusOr<Principal> HttpCaller(const httplib::Request& req, const Authenticator& auth) {
  if (req.has_header("Authorization")) {
    return auth.Authenticate(req.get_header_value("Authorization"));
  }
  const std::string cookie = CookieValue(req.get_header_value("Cookie"), kSessionCookie);
  if (!cookie.empty()) return auth.AuthenticateToken(cookie);
  return auth.Authenticate("");
}

StatusOr<std::string> CsrfToken(const httplib::Request& req, httplib::Response& res, bool secure) {
  std::string token = CookieValue(req.get_header_value("Cookie"), kCsrfCookie);
  if (WellFormedCsrf(token)) return token;
  QLORAD_ASSIGN_OR_RETURN(token, NewCsrfToken());
  res.set_header("Set-Cookie", CookieHeader(kCsrfCookie, token, secure, false));
  return token;
}

Status CheckCsrf(const httplib::Request& req) {
  if (req.has_header("Authorization")) return Status::Ok();
  const std::string cookie = CookieValue(req.get_header_value("Cookie"), kCsrfCookie);
  const std::string sent = req.has_header(kCsrfHeader) ? req.get_header_value(kCsrfHeader)
                                                       : req.get_param_value(kCsrfField);
  if (cookie.empty()) {
    return PermissionDenied(
        "CSRF check failed: no qlorad_csrf cookie came with this request; load the page again "
        "(it sets one) and retry, or send an Authorization header instead");
  }
  if (sent.empty()) {
    return PermissionDenied(std::string("CSRF check failed: no CSRF token in the request (the '") +
                            kCsrfField + "' form field or the " + kCsrfHeader +
                            " header); load the page again and retry");
  }
  // Constant time: how much of a guess matched says nothing.
  if (sent.size() != cookie.size() || CRYPTO_memcmp(sent.data(), cookie.data(), sent.size()) != 0) {
    return PermissionDenied(
        "CSRF check failed: the request's CSRF token does not match its qlorad_csrf cookie; load "
        "the page again and retry");
  }
  return Status::Ok();
}

void AddLoginRoutes(httplib::Server& server, const Authenticator& auth, bool secure) {
  server.Get("/login", [secure](const httplib::Request& req, httplib::Response& res) {
    ReplyLoginPage(req, res, secure, 200, "");
  });
  server.Post("/login", [&auth, secure](const httplib::Request& req, httplib::Response& res) {
    if (Status csrf = CheckCsrf(req); !csrf.ok()) {
      return ReplyLoginPage(req, res, secure, 403, csrf.message());
    }
    const std::string token = req.get_param_value("token");
    auto caller = auth.AuthenticateToken(token);
    const Status allowed = caller.ok()
                               ? RequireRole(*caller, {Role::kUser, Role::kAdmin}, "the dashboard")
                               : caller.status();
    if (!allowed.ok()) return ReplyLoginPage(req, res, secure, 401, allowed.message());
    res.set_header("Set-Cookie", CookieHeader(kSessionCookie, token, secure, false));
    res.set_redirect("/", 303);
  });
  server.Post("/logout", [secure](const httplib::Request& req, httplib::Response& res) {
    if (Status csrf = CheckCsrf(req); !csrf.ok()) {
      res.status = 403;
      res.set_content(csrf.message() + "\n", "text/plain; charset=utf-8");
      return;
    }
    res.set_header("Set-Cookie", CookieHeader(kSessionCookie, "", secure, true));
    res.set_redirect("/login", 303);
  });
}

}  // namespace qlorad::server
