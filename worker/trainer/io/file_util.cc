#include "worker/trainer/io/file_util.h"

#include <ftw.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace qlorad::trainer {

namespace {

int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) {
  return std::remove(path) == 0 ? 0 : errno;
}

}  // namespace

Status RemoveTree(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0 && errno == ENOENT) return Status::Ok();
  // Depth first (children before their directory), physical (do not follow symlinks).
  const int rc = nftw(path.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS);
  if (rc != 0) {
    return Internal(path + ": cannot remove: " + std::strerror(rc > 0 ? rc : errno));
  }
  return Status::Ok();
}

Status RequireNewOrEmptyDir(const std::string& dir, const std::string& flag) {
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_empty(dir, ec)) {
    return InvalidArgument(flag + ": " + dir + " exists and is not empty");
  }
  return Status::Ok();
}

StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Internal(path + ": read failed");
  return text.str();
}

}  // namespace qlorad::trainer
