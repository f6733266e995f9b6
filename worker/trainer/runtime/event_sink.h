// Where the trainer reports progress: JSON event lines on stdout (common/events.h, for the worker
// agent and `--json`), or readable lines on stderr for a person at a terminal.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

#include "common/events.h"

namespace qlorad::trainer {

class EventSink {
 public:
  // json: event lines on `out`; otherwise human-readable text on `err`.
  EventSink(bool json, std::ostream& out, std::ostream& err) : json_(json), out_(out), err_(err) {}

  void Started(int64_t total_steps, const std::string& device, int rank, int world_size);
  void Metrics(const events::Metrics& m);
  void Log(const std::string& level, const std::string& message);
  void Checkpoint(int64_t step, const std::string& path);
  void MicroBatchReduced(const events::MicroBatchReduced& reduced);  // as a warning, in text
  void Done(const events::Done& done);
  void Error(const std::string& message, const std::string& field);

 private:
  void Emit(const std::string& json_line, const std::string& text);

  bool json_;
  std::ostream& out_;
  std::ostream& err_;
};

}  // namespace qlorad::trainer
