#include "client/cli/errors.h"

#include <nlohmann/json.hpp>
#include <string>

namespace qlorad::cli {

int ReportError(std::ostream& err, bool json, std::string_view code, std::string_view message,
                int exit_code) {
  if (json) {
    const nlohmann::json line = {{"type", "error"},
                                 {"code", std::string(code)},
                                 {"message", std::string(message)},
                                 {"exit_code", exit_code}};
    err << line.dump() << "\n";
  } else {
    err << "error: " << message << "\n";
  }
  err.flush();
  return exit_code;
}

}  // namespace qlorad::cli
