#include "common/host_memory.h"

#include <charconv>
#include <sstream>

#include "common/read_file.h"

namespace qlorad {

namespace {

std::string_view Trim(std::string_view s) {
  const std::size_t begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  const std::size_t end = s.find_last_not_of(" \t\r\n");
  return s.substr(begin, end - begin + 1);
}

// A cgroup file holding one number ("max" or unreadable: nullopt).
std::optional<int64_t> CgroupNumber(const std::string& path) {
  const std::optional<std::string> text = ReadWholeFile(path);
  if (!text) return std::nullopt;
  const std::string_view value = Trim(*text);
  int64_t n = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || end != value.data() + value.size()) return std::nullopt;
  return n;
}

}  // namespace

std::optional<std::string_view> ProcField(std::string_view text, std::string_view key) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    const std::size_t colon = line.find(':');
    if (colon != std::string_view::npos && Trim(line.substr(0, colon)) == key) {
      return Trim(line.substr(colon + 1));
    }
  }
  return std::nullopt;
}

StatusOr<int64_t> MeminfoBytes(std::string_view meminfo, std::string_view field) {
  const std::string name(field);
  auto value = ProcField(meminfo, field);
  if (!value) return InvalidArgument("meminfo: no " + name + " line");
  int64_t kib = 0;
  const auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), kib);
  if (ec != std::errc() || Trim(std::string_view(end, value->data() + value->size())) != "kB" ||
      kib < 0) {
    return InvalidArgument("meminfo: " + name + ": expected '<n> kB', got '" + std::string(*value) +
                           "'");
  }
  return kib * 1024;
}

std::optional<int64_t> HostAvailableBytes(const std::string& meminfo_path,
                                          const std::string& self_cgroup_path,
                                          const std::string& cgroup_root) {
  const std::optional<std::string> meminfo = ReadWholeFile(meminfo_path);
  if (!meminfo) return std::nullopt;
  const StatusOr<int64_t> available = MeminfoBytes(*meminfo, "MemAvailable");
  if (!available.ok()) return std::nullopt;
  int64_t bytes = *available;
  // cgroup v2 names the process's group on the line "0::<path>".
  if (const std::optional<std::string> self = ReadWholeFile(self_cgroup_path)) {
    std::istringstream lines(*self);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("0::", 0) != 0) continue;
      std::string dir = cgroup_root + std::string(Trim(line.substr(3)));
      if (!dir.empty() && dir.back() == '/') dir.pop_back();
      const std::optional<int64_t> max = CgroupNumber(dir + "/memory.max");
      const std::optional<int64_t> current = CgroupNumber(dir + "/memory.current");
      if (!max || !current) continue;
      // memory.current counts the page cache, which the kernel gives back under pressure.
      int64_t file = 0;
      if (const std::optional<std::string> stat = ReadWholeFile(dir + "/memory.stat")) {
        std::istringstream fields(*stat);
        for (std::string key; fields >> key;) {
          int64_t value = 0;
          if (!(fields >> value)) break;
          if (key == "file") file = value;
        }
      }
      bytes = std::min(bytes, std::max<int64_t>(0, *max - *current + file));
    }
  }
  return bytes;
}

}  // namespace qlorad
