#include "common/process/line_splitter.h"

namespace qlorad::process {

void LineSplitter::Feed(std::string_view bytes, const Emit& emit) {
  while (!bytes.empty()) {
    const std::size_t newline = bytes.find('\n');
    const std::size_t room = max_line_bytes_ - pending_.size();
    if (newline == std::string_view::npos || newline > room) {
      const std::size_t take = std::min(bytes.size(), room);
      pending_.append(bytes.substr(0, take));
      bytes.remove_prefix(take);
      if (pending_.size() >= max_line_bytes_) EmitPending(emit);
      continue;
    }
    pending_.append(bytes.substr(0, newline));
    bytes.remove_prefix(newline + 1);
    EmitPending(emit);
  }
}

void LineSplitter::Finish(const Emit& emit) {
  if (!pending_.empty()) EmitPending(emit);
}

void LineSplitter::EmitPending(const Emit& emit) {
  if (!pending_.empty() && pending_.back() == '\r') pending_.pop_back();
  emit(pending_);
  pending_.clear();
}

}  // namespace qlorad::process
