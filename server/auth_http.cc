#include "server/auth_http.h"

#include <httplib.h>

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

std::string SessionCookieHeader(const std::string& value, bool secure, bool clear) {
  return std::string(kSessionCookie) + "=" + value + "; Path=/; HttpOnly; SameSite=Strict" +
         (secure ? "; Secure" : "") + (clear ? "; Max-Age=0" : "");
}

void ReplyLoginPage(httplib::Response& res, int status, const std::string& error) {
  res.status = status;
  res.set_header("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'");
  res.set_content(LoginPageHtml(error), "text/html; charset=utf-8");
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

void AddLoginRoutes(httplib::Server& server, const Authenticator& auth, bool secure) {
  server.Get("/login",
             [](const httplib::Request&, httplib::Response& res) { ReplyLoginPage(res, 200, ""); });
  server.Post("/login", [&auth, secure](const httplib::Request& req, httplib::Response& res) {
    const std::string token = req.get_param_value("token");
    auto caller = auth.AuthenticateToken(token);
    const Status allowed = caller.ok()
                               ? RequireRole(*caller, {Role::kUser, Role::kAdmin}, "the dashboard")
                               : caller.status();
    if (!allowed.ok()) return ReplyLoginPage(res, 401, allowed.message());
    res.set_header("Set-Cookie", SessionCookieHeader(token, secure, false));
    res.set_redirect("/", 303);
  });
  server.Post("/logout", [secure](const httplib::Request&, httplib::Response& res) {
    res.set_header("Set-Cookie", SessionCookieHeader("", secure, true));
    res.set_redirect("/login", 303);
  });
}

}  // namespace qlorad::server
