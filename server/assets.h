// The dashboard's static files (server/dashboard/*.js, *.css), compiled into the binary at build
// time by cmake/EmbedAssets.cmake: the coordinator serves them with no files beside it and no
// build step outside CMake.
#pragma once

#include <cstddef>
#include <string_view>

namespace qlorad::server {

struct EmbeddedAsset {
  std::string_view name;  // the file name, e.g. "chart.js"
  std::string_view content_type;
  std::string_view body;
};

// Defined in the generated dashboard_assets.cc.
extern const EmbeddedAsset kEmbeddedAssets[];
extern const size_t kEmbeddedAssetCount;

// The asset of that file name, or nullptr.
inline const EmbeddedAsset* FindAsset(std::string_view name) {
  for (size_t i = 0; i < kEmbeddedAssetCount; ++i) {
    if (kEmbeddedAssets[i].name == name) return &kEmbeddedAssets[i];
  }
  return nullptr;
}

}  // namespace qlorad::server
