// Test helpers: a private temporary folder and executable /bin/sh scripts written into it, so
// the agent's process handling is tested against real child processes; an event recorder.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "worker/agent/trainer_run.h"

namespace qlorad::agent::testing {

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "qlorad-agent-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

  // Writes `body` after a "#!/bin/sh" line and makes it executable.
  std::filesystem::path Script(const std::string& name, const std::string& body) const {
    const std::filesystem::path file = path_ / name;
    std::ofstream(file) << "#!/bin/sh\n" << body;
    ::chmod(file.c_str(), 0755);
    return file;
  }

 private:
  std::filesystem::path path_;
};

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

// Polls `done` until it holds or `timeout` passes; returns whether it held. The timeout only
// bounds a hang: generous, so a loaded machine is never mistaken for a broken agent.
inline bool WaitUntil(const std::function<bool()>& done,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

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
