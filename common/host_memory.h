// The host's memory as /proc and cgroup v2 report it: the worker's device probe reads MemTotal,
// and the trainer checks that activation offload's page-locked buffers will fit in what the host
// can still give (pinned pages cannot be swapped, and the kernel's out-of-memory killer ends a
// process that asks for more without a word).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace qlorad {

// The value after "key:" on a line of a /proc file (cpuinfo, meminfo), trimmed.
std::optional<std::string_view> ProcField(std::string_view text, std::string_view key);

// A meminfo line "<field>: <n> kB" in bytes. Errors: "meminfo: no <field> line",
// "meminfo: <field>: expected '<n> kB', got '<value>'".
StatusOr<int64_t> MeminfoBytes(std::string_view meminfo, std::string_view field);

// What this process can still allocate on the host: meminfo's MemAvailable, or less where its
// cgroup (v2: /proc/self/cgroup's "0::<path>", under cgroup_root) leaves less: memory.max -
// memory.current + its page cache (memory.stat's "file", which the kernel reclaims). nullopt when
// meminfo cannot be read.
std::optional<int64_t> HostAvailableBytes(const std::string& meminfo_path = "/proc/meminfo",
                                          const std::string& self_cgroup_path = "/proc/self/cgroup",
                                          const std::string& cgroup_root = "/sys/fs/cgroup");

}  // namespace qlorad
