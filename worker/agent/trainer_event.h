// Turns what qlorad-train prints into the TrainerEvent messages the coordinator receives.
// The line format is common/events.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "qlorad/v1/workers.pb.h"

namespace qlorad::agent {

// Which job, attempt and rank a trainer process runs; stamped on every event it produces.
struct EventContext {
  std::string job_id;
  int attempt = 0;
  int rank = 0;
};

// One stdout line → one event. A line that is not a JSON object, or names an event kind this
// agent does not know, becomes a log line carrying the text, so nothing the trainer says is lost;
// a known kind with a field of the wrong type becomes a warning log line that names the field.
// Unknown keys are ignored (the format grows). A diverged loss ("NaN", "Infinity", or null from an
// older trainer) becomes NaN or the infinity it was.
v1::TrainerEvent TrainerEventFromLine(std::string_view line, const EventContext& ctx,
                                      int64_t unix_ms);

// A log event; source is "trainer" or "worker".
v1::TrainerEvent LogEvent(const EventContext& ctx, const std::string& level,
                          const std::string& message, const std::string& source, int64_t unix_ms);

int64_t UnixMillisNow();

}  // namespace qlorad::agent
