// Plain-text tables for qloractl (`jobs`, `workers`): columns as wide as their widest cell, two
// spaces apart, no trailing spaces, one line per row ending in a newline.
#pragma once

#include <string>
#include <vector>

namespace qlorad::cli {

// rows[0] is the header; every row has the header's number of cells.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

}  // namespace qlorad::cli
