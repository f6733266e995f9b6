#include "common/path_sandbox.h"

#include <algorithm>
#include <system_error>

namespace qlorad {
namespace {

namespace fs = std::filesystem;

// "/a/b/" and "/a/b/." name the folder "/a/b"; without the trailing empty element a prefix test
// by path elements works.
fs::path Normal(const fs::path& p) {
  fs::path n = p.lexically_normal();
  if (!n.has_filename() && n.has_relative_path()) n = n.parent_path();
  return n;
}

// By whole path elements: /data2 is not inside /data. An empty root holds nothing (a worker
// whose roots were never set refuses every path rather than allowing every one).
bool IsInside(const fs::path& path, const fs::path& root) {
  if (root.empty()) return false;
  const auto [root_end, unused] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  return root_end == root.end();
}

std::string Joined(const std::vector<fs::path>& roots) {
  std::string out;
  for (const fs::path& r : roots) out += (out.empty() ? "" : ", ") + r.string();
  return out;
}

// Where `written` points on this machine: against base, `..` folded, and with kFollowSymlinks
// every link that exists resolved (weakly_canonical keeps the part that does not exist yet, an
// output folder, as written once its parent is resolved).
fs::path Resolved(const std::string& written, const fs::path& base, PathResolution how) {
  const fs::path absolute = Normal(base / written);
  if (how == PathResolution::kWrittenOnly) return absolute;
  std::error_code ec;
  fs::path real = fs::weakly_canonical(absolute, ec);
  // A path that cannot be resolved (a loop of links, a folder we may not enter) is refused: it is
  // not known to be inside.
  return ec ? fs::path() : Normal(real);
}

std::optional<PathRefusal> CheckPath(const std::string& field, const std::string& written,
                                     const std::vector<fs::path>& allowed, const PathRoots& roots,
                                     PathResolution how, const char* verb) {
  const fs::path path = Resolved(written, roots.base, how);
  auto holds_it = [&](const fs::path& root) { return IsInside(path, Normal(root)); };
  if (!path.empty() && std::any_of(allowed.begin(), allowed.end(), holds_it)) return std::nullopt;
  std::string shown = written;
  if (path.empty()) {
    shown += " (cannot be resolved)";
  } else if (path != Normal(roots.base / written)) {
    shown += " (resolves to " + path.string() + " through a symbolic link)";
  } else if (path.string() != written) {
    shown += " (" + path.string() + ")";
  }
  return PathRefusal{field, field + ": " + shown + " is outside the folders this worker may " +
                                verb + ": " + Joined(allowed)};
}

}  // namespace

std::optional<PathRefusal> CheckSpecPaths(const JobSpec& spec, const std::string& resume_from,
                                          const PathRoots& roots, PathResolution how) {
  std::vector<fs::path> readable = roots.read;
  if (std::find(readable.begin(), readable.end(), roots.write) == readable.end()) {
    readable.push_back(roots.write);
  }
  const std::vector<fs::path> writable = {roots.write};
  struct Named {
    const char* field;
    const std::string* path;
    const std::vector<fs::path>* allowed;
    const char* verb;
  };
  const Named paths[] = {
      {"model.path", &spec.model.path, &readable, "read"},
      {"data.path", &spec.data.path, &readable, "read"},
      {"data.validation", &spec.data.validation_path, &readable, "read"},
      {"lora.init_from", spec.lora.init_from ? &*spec.lora.init_from : nullptr, &readable, "read"},
      {"checkpoint.output_dir", &spec.checkpoint.output_dir, &writable, "write"},
      {"resume_from", &resume_from, &writable, "write"},
  };
  for (const Named& p : paths) {
    if (p.path == nullptr || p.path->empty()) continue;
    if (auto refused = CheckPath(p.field, *p.path, *p.allowed, roots, how, p.verb)) return refused;
  }
  return std::nullopt;
}

StatusOr<PathRoots> ResolveRoots(const PathRoots& roots, const std::string& read_flag,
                                 const std::string& write_flag) {
  std::error_code ec;
  PathRoots out;
  out.base = fs::canonical(roots.base, ec);
  if (ec) return InvalidArgument("--work-dir: " + roots.base.string() + ": " + ec.message());
  for (const fs::path& r : roots.read) {
    fs::path real = fs::canonical(out.base / r, ec);
    if (ec) return InvalidArgument(read_flag + ": " + r.string() + ": " + ec.message());
    if (!fs::is_directory(real)) {
      return InvalidArgument(read_flag + ": " + r.string() + " is not a directory");
    }
    out.read.push_back(std::move(real));
  }
  const fs::path write = out.base / roots.write;
  fs::create_directories(write, ec);
  if (ec) {
    return InvalidArgument(write_flag + ": cannot create " + write.string() + ": " + ec.message());
  }
  out.write = fs::canonical(write, ec);
  if (ec) return InvalidArgument(write_flag + ": " + write.string() + ": " + ec.message());
  return out;
}

}  // namespace qlorad
