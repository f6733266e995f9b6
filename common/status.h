// Status and StatusOr: how functions that can fail report it inside qlorad (no exceptions across
// component boundaries). Propagate with QLORAD_RETURN_IF_ERROR / QLORAD_ASSIGN_OR_RETURN.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace qlorad {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // bad input from the user: a spec field, a file, a dataset line
  kNotFound,
  kFailedPrecondition,
  kAlreadyExists,
  kUnavailable,
  kDataLoss,  // a corrupt file
  kInternal,
  kCancelled,
  kUnauthenticated,   // no credentials, or ones nobody issued (or revoked)
  kPermissionDenied,  // a known caller asking for what is not theirs
};

const char* StatusCodeName(StatusCode code);

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: train.lr: must be > 0"
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) {
  return {StatusCode::kNotFound, std::move(m)};
}
inline Status FailedPrecondition(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status DataLoss(std::string m) {
  return {StatusCode::kDataLoss, std::move(m)};
}
inline Status Internal(std::string m) {
  return {StatusCode::kInternal, std::move(m)};
}
inline Status Unavailable(std::string m) {
  return {StatusCode::kUnavailable, std::move(m)};
}
inline Status Unauthenticated(std::string m) {
  return {StatusCode::kUnauthenticated, std::move(m)};
}
inline Status PermissionDenied(std::string m) {
  return {StatusCode::kPermissionDenied, std::move(m)};
}

template <typename T>
class StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) { assert(!status_.ok()); }  // NOLINT

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace qlorad

#define QLORAD_CONCAT_INNER(a, b) a##b
#define QLORAD_CONCAT(a, b) QLORAD_CONCAT_INNER(a, b)

#define QLORAD_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::qlorad::Status qlorad_status_ = (expr);        \
    if (!qlorad_status_.ok()) return qlorad_status_; \
  } while (0)

#define QLORAD_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

#define QLORAD_ASSIGN_OR_RETURN(lhs, expr) \
  QLORAD_ASSIGN_OR_RETURN_IMPL(QLORAD_CONCAT(qlorad_statusor_, __LINE__), lhs, expr)
