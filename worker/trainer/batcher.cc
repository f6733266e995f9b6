#include "worker/trainer/batcher.h"

#include <algorithm>
#include <numeric>

#include "worker/trainer/portable_rng.h"

namespace qlorad::trainer {

namespace {

// Any valid id works for padding: padded positions come after the real ones, so causal attention
// never lets them influence a real token, and their labels are ignored.
constexpr int64_t kPadInput = 0;

// Fisher-Yates with our own generator: std::shuffle's output differs between standard libraries.
std::vector<size_t> EpochOrder(size_t n, bool shuffle, uint64_t seed, int64_t epoch) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  if (!shuffle) return order;
  SplitMix64 rng(seed ^ (0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(epoch + 1)));
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.NextBelow(i)]);
  return order;
}

}  // namespace

StatusOr<Batcher> Batcher::Create(std::vector<Document> documents, const BatcherOptions& options) {
  if (options.max_seq_len < 1) return InvalidArgument("data.max_seq_len: must be >= 1");
  Batcher batcher(std::move(documents), options);
  if (batcher.rows_.empty()) {
    return InvalidArgument(
        "data.path: no example has a token to predict (every document has fewer "
        "than two tokens)");
  }
  return batcher;
}

Batcher::Batcher(std::vector<Document> documents, const BatcherOptions& options)
    : documents_(std::move(documents)), options_(options) {
  BuildEpoch(0);
}

void Batcher::BuildEpoch(int64_t epoch) {
  rows_.clear();
  const int64_t len = options_.max_seq_len;
  const std::vector<size_t> order =
      EpochOrder(documents_.size(), options_.shuffle, options_.seed, epoch);
  if (options_.packing) {
    std::vector<int64_t> ids, labels;
    for (size_t i : order) {
      ids.insert(ids.end(), documents_[i].input_ids.begin(), documents_[i].input_ids.end());
      labels.insert(labels.end(), documents_[i].labels.begin(), documents_[i].labels.end());
    }
    // Windows of len + 1 tokens that overlap by one, so every token after the first is a target
    // exactly once per epoch.
    for (int64_t start = 0; start + 1 < static_cast<int64_t>(ids.size()); start += len) {
      const int64_t end = std::min<int64_t>(start + len + 1, static_cast<int64_t>(ids.size()));
      rows_.push_back({{ids.begin() + start, ids.begin() + end - 1},
                       {labels.begin() + start + 1, labels.begin() + end}});
    }
  } else {
    for (size_t i : order) {
      const Document& d = documents_[i];
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(d.input_ids.size()), len + 1);
      if (n < 2) continue;
      rows_.push_back({{d.input_ids.begin(), d.input_ids.begin() + n - 1},
                       {d.labels.begin() + 1, d.labels.begin() + n}});
    }
  }
  position_ = {epoch, 0};
}

void Batcher::Seek(const DataPosition& position) {
  if (position.epoch != position_.epoch) BuildEpoch(position.epoch);
  position_.row = std::clamp<int64_t>(position.row, 0, static_cast<int64_t>(rows_.size()));
}

Batch Batcher::Next(int64_t rows) {
  std::vector<const Row*> picked;
  for (int64_t i = 0; i < rows; ++i) {
    if (position_.row >= static_cast<int64_t>(rows_.size())) BuildEpoch(position_.epoch + 1);
    picked.push_back(&rows_[static_cast<size_t>(position_.row++)]);
  }
  Batch batch;
  batch.rows = rows;
  for (const Row* r : picked) batch.seq_len = std::max<int64_t>(batch.seq_len, r->inputs.size());
  batch.inputs.assign(static_cast<size_t>(rows * batch.seq_len), kPadInput);
  batch.labels.assign(static_cast<size_t>(rows * batch.seq_len), kIgnoreLabel);
  for (size_t r = 0; r < picked.size(); ++r) {
    const size_t offset = r * static_cast<size_t>(batch.seq_len);
    std::copy(picked[r]->inputs.begin(), picked[r]->inputs.end(), batch.inputs.begin() + offset);
    std::copy(picked[r]->labels.begin(), picked[r]->labels.end(), batch.labels.begin() + offset);
    batch.tokens += static_cast<int64_t>(picked[r]->inputs.size());
    batch.valid_labels += std::count_if(picked[r]->labels.begin(), picked[r]->labels.end(),
                                        [](int64_t l) { return l != kIgnoreLabel; });
  }
  return batch;
}

}  // namespace qlorad::trainer
