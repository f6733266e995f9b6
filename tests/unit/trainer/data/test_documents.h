// Synthetic documents for batching tests: varied lengths, and some prompt tokens that are not
// trained (labels kIgnoreLabel), so rows differ in length and valid-label count.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/trainer/data/dataset.h"

namespace qlorad::trainer::testing {

// Document d has 2 + d % lengths tokens, ids id_stride * d + t, of which the first d % prompt are
// untrained.
inline std::vector<Document> VariedDocuments(int64_t count, int64_t lengths, int64_t prompt,
                                             int64_t id_stride) {
  std::vector<Document> docs;
  for (int64_t d = 0; d < count; ++d) {
    Document doc;
    for (int64_t t = 0; t < 2 + d % lengths; ++t) {
      doc.input_ids.push_back(id_stride * d + t);
      doc.labels.push_back(t < d % prompt ? kIgnoreLabel : id_stride * d + t);
    }
    docs.push_back(doc);
  }
  return docs;
}

}  // namespace qlorad::trainer::testing
