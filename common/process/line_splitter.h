// Splits a byte stream (a child's stdout or stderr pipe) into lines.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace qlorad::process {

class LineSplitter {
 public:
  using Emit = std::function<void(std::string_view line)>;

  // A line longer than max_line_bytes is cut there, so a child that never prints '\n' cannot
  // make its reader hold an unbounded buffer.
  explicit LineSplitter(std::size_t max_line_bytes = 1 << 20) : max_line_bytes_(max_line_bytes) {}

  // Calls emit for every complete line in `bytes` (without the '\n' and a trailing '\r').
  void Feed(std::string_view bytes, const Emit& emit);
  // End of stream: a last line without '\n' is still a line.
  void Finish(const Emit& emit);

 private:
  void EmitPending(const Emit& emit);

  std::size_t max_line_bytes_;
  std::string pending_;
};

}  // namespace qlorad::process
