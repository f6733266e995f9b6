#include "worker/trainer/runtime/exit_codes.h"

#include <algorithm>
#include <cctype>

namespace qlorad::trainer {

int ExitCodeFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk:
      return kExitDone;
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
    case StatusCode::kDataLoss:
      return kExitBadInput;
    default:
      return kExitFailure;
  }
}

std::string ErrorField(const std::string& message) {
  const size_t colon = message.find(": ");
  if (colon == std::string::npos || colon == 0) return "";
  const std::string head = message.substr(0, colon);
  // A spec field is lower-case words joined by dots; file paths contain '/' and are not fields.
  const bool field_like = std::all_of(head.begin(), head.end(), [](unsigned char c) {
    return std::islower(c) || std::isdigit(c) || c == '_' || c == '.' || c == '-';
  });
  return field_like && std::islower(static_cast<unsigned char>(head[0])) ? head : "";
}

}  // namespace qlorad::trainer
