#include "client/cli/terminal.h"

#include <sys/ioctl.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

namespace qlorad::cli {

int TerminalColumns(int fd) {
  winsize size{};
  if (ioctl(fd, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  // Some terminals (and `script`) report no size; shells export COLUMNS for them.
  if (const char* env = std::getenv("COLUMNS")) {
    int columns = 0;
    const char* end = env + std::strlen(env);
    if (std::from_chars(env, end, columns).ptr == end && columns > 0) return columns;
  }
  return 80;
}

}  // namespace qlorad::cli
