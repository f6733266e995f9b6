// The schema version a store file records, read over a connection of its own: what the
// store_version*_test files check after an upgrade.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "server/sqlite_db.h"

namespace qlorad::server::testing {

inline std::string SchemaVersion(const std::string& db) {
  auto conn = Database::Open(db);
  EXPECT_TRUE(conn.ok());
  auto select = (*conn)->Prepare("SELECT MAX(version) FROM schema_version");
  EXPECT_TRUE(select.ok());
  EXPECT_TRUE(*(*select)->Step());
  return (*select)->Text(0);
}

}  // namespace qlorad::server::testing
