// Where a worker's trainers may read and write (issue #19: a spec must not read /etc/shadow or
// write over ../../). A worker has roots it reads models, data and adapters from, and one root it
// writes checkpoints and adapters under (readable too: a job may start from an earlier job's
// adapter). Relative spec paths resolve against the worker's --work-dir.
//
// The worker checks with the file system (symbolic links followed, so a link inside a root that
// points outside it is refused); the coordinator, which cannot see the worker's files, checks the
// same rules on the written paths alone at submit, against the roots each worker reported.
// A check is not a lock: someone who can replace a directory inside a root by a link after the
// check can still escape, so the roots should be writable by the worker's user only (deploy/).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/jobspec.h"
#include "common/status.h"

namespace qlorad {

struct PathRoots {
  std::filesystem::path base;               // relative spec paths resolve against it
  std::vector<std::filesystem::path> read;  // models, data, adapters to start from
  std::filesystem::path write;              // checkpoints and adapters
};

enum class PathResolution {
  kWrittenOnly,     // `..` and absolute paths, as written (the coordinator)
  kFollowSymlinks,  // and every symbolic link that exists on this machine (the worker)
};

// A spec path outside the roots. `message` starts with the field and names the path and the
// allowed roots: "data.path: /etc/shadow is outside the folders this worker may read: ...".
struct PathRefusal {
  std::string field;
  std::string message;
  Status ToStatus() const { return InvalidArgument(message); }
};

// Checks model.path, data.path, data.validation, lora.init_from (read) and checkpoint.output_dir
// (write), and `resume_from` (a checkpoint the coordinator names; read from the write root) unless
// it is empty. The first path refused, or nullopt when all are inside.
std::optional<PathRefusal> CheckSpecPaths(const JobSpec& spec, const std::string& resume_from,
                                          const PathRoots& roots, PathResolution how);

// The worker's roots made absolute and resolved, so that checks compare like with like:
// `base` and the read roots must exist; the write root is created when missing. Errors name
// `read_flag` or `write_flag`.
StatusOr<PathRoots> ResolveRoots(const PathRoots& roots, const std::string& read_flag,
                                 const std::string& write_flag);

}  // namespace qlorad
