#include "worker/trainer/io/json_file.h"

#include <fstream>

namespace qlorad::trainer {

StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(path + ": not valid JSON: " + e.what());
  }
}

Status WriteJsonFile(const std::string& path, const nlohmann::json& value) {
  std::ofstream out(path, std::ios::trunc);
  out << value.dump(2) << "\n";
  out.close();
  if (!out) return Internal(path + ": write failed");
  return Status::Ok();
}

}  // namespace qlorad::trainer
