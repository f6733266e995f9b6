#include "worker/trainer/data/validation_split.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "common/portable_rng.h"

namespace qlorad::trainer {

namespace {
// Mixed into data.seed so the held-out set is not correlated with the epoch-0 shuffle, which
// seeds the same generator from data.seed too (batcher.cc).
constexpr uint64_t kSplitSalt = 0x76616c6964617465ULL;  // "validate"
}  // namespace

StatusOr<SplitDocuments> SplitOffValidation(std::vector<Document> documents, double fraction,
                                            uint64_t seed) {
  const size_t n = documents.size();
  if (n < 2) {
    return InvalidArgument(
        "data.validation: holding out a fraction needs at least 2 examples in "
        "data.path, got " +
        std::to_string(n));
  }
  const auto wanted = static_cast<size_t>(std::llround(fraction * static_cast<double>(n)));
  const size_t held_out = std::clamp<size_t>(wanted, 1, n - 1);
  // The first held_out indices of a seeded Fisher-Yates permutation.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  SplitMix64 rng(seed ^ kSplitSalt);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.NextBelow(i)]);
  std::vector<bool> is_validation(n, false);
  for (size_t i = 0; i < held_out; ++i) is_validation[order[i]] = true;

  SplitDocuments split;
  split.validation.reserve(held_out);
  split.train.reserve(n - held_out);
  for (size_t i = 0; i < n; ++i) {
    (is_validation[i] ? split.validation : split.train).push_back(std::move(documents[i]));
  }
  return split;
}

}  // namespace qlorad::trainer
