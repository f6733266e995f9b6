// A trainer's refusal of a job for GPU memory (DoesNotFitMessage in memory_estimate.h) crosses a
// process boundary as text: the trainer exits 2 with it as its error, and the coordinator reads
// the peak back to move the job to a worker with more memory (server/coordinator_memory.cc). The
// format has one owner: this file.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace qlorad {

// How a refusal starts, followed by FormatMemory(peak) and " at its peak".
inline constexpr std::string_view kRefusalStart = "the memory estimate of this job is ";

// The peak a refusal names (anywhere in `message`), rounded up by what its text leaves out
// (FormatMemory keeps a tenth of a GiB, or whole MiB); nullopt when `message` holds none.
std::optional<int64_t> PeakOfRefusal(std::string_view message);

}  // namespace qlorad
