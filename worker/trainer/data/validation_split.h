// data.validation given as a fraction: which examples of data.path are held out for evaluation.
// The choice depends only on the documents' count, the fraction and data.seed (our own generator,
// portable_rng.h), so every rank and every restart of a job holds out the same examples, and the
// training order is drawn from what is left.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "worker/trainer/data/dataset.h"

namespace qlorad::trainer {

struct SplitDocuments {
  std::vector<Document> train;       // in their file order
  std::vector<Document> validation;  // in their file order
};

// Holds out round(fraction * n) documents, at least one, leaving at least one to train on.
// Fewer than two documents is an error naming data.validation.
StatusOr<SplitDocuments> SplitOffValidation(std::vector<Document> documents, double fraction,
                                            uint64_t seed);

}  // namespace qlorad::trainer
