// Test helpers: a private temporary folder and executable /bin/sh scripts written into it (from
// tests/unit/common/process/), so the agent's process handling is tested against real child
// processes; a fake qlorad-train; an event recorder.
#pragma once

#include <mutex>
#include <utility>
#include <vector>

#include "tests/unit/common/process/script_fixture.h"
#include "worker/agent/trainer_run.h"

namespace qlorad::agent::testing {

using process::testing::TempDir;
using process::testing::WaitUntil;

// Prints its progress like qlorad-train and exits 0; a spec containing "hang" makes it run until
// SIGTERM, on which it checkpoints and exits 0; one containing "gated" finishes only once a file
// named `go` exists next to the script, so a test decides when the run ends.
inline constexpr const char* kFakeQloradTrain = R"(
trap 'echo "{\"event\":\"checkpoint\",\"step\":1,\"path\":\"/ck\"}"; exit 0' TERM
echo '{"event":"started","pid":'$$',"total_steps":2}'
echo '{"event":"metrics","step":1,"total_steps":2,"loss":3.0}'
echo 'tokenizer warning' >&2
if grep -q gated "$2"; then
  while [ ! -e "$(dirname "$0")/go" ]; do sleep 0.05; done
fi
if grep -q hang "$2"; then
  while true; do sleep 0.05; done
fi
echo '{"event":"done","steps":2,"adapter_path":"/ad","final_loss":2.0}'
)";

// An EventSink that keeps every event it is given, for the test thread to look at.
class EventLog {
 public:
  EventSink Sink() {
    return [this](v1::TrainerEvent e) {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(e));
    };
  }
  std::vector<v1::TrainerEvent> Events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  bool EndsWithExit() {
    auto all = Events();
    return !all.empty() && all.back().has_exit();
  }

 private:
  std::mutex mu_;
  std::vector<v1::TrainerEvent> events_;
};

}  // namespace qlorad::agent::testing
