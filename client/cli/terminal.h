// The width of the terminal qloractl draws its progress line on.
#pragma once

namespace qlorad::cli {

// Columns of the terminal at `fd` (TIOCGWINSZ), else $COLUMNS, else 80.
int TerminalColumns(int fd);

}  // namespace qlorad::cli
