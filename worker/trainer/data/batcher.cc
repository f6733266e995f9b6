#include "worker/trainer/data/batcher.h"

#include <algorithm>
#include <numeric>

#include "common/portable_rng.h"

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
    // Each document contributes its (input, next-token target) pairs; the last token predicts
    // nothing, since what follows it belongs to another document. The pairs of all documents
    // are cut into rows of `len`, so every target is trained exactly once per epoch; positions
    // restart where a document (or the piece of it a row holds) starts.
    Row row;
    for (size_t i : order) {
      const Document& d = documents_[i];
      for (size_t t = 0; t + 1 < d.input_ids.size(); ++t) {
        const bool starts = t == 0 || row.inputs.empty();
        row.positions.push_back(starts ? 0 : row.positions.back() + 1);
        row.inputs.push_back(d.input_ids[t]);
        row.labels.push_back(d.labels[t + 1]);
        if (static_cast<int64_t>(row.inputs.size()) == len) {
          rows_.push_back(std::move(row));
          row = {};
        }
      }
    }
    if (!row.inputs.empty()) rows_.push_back(std::move(row));
  } else {
    for (size_t i : order) {
      const Document& d = documents_[i];
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(d.input_ids.size()), len + 1);
      if (n < 2) continue;
      Row row{{d.input_ids.begin(), d.input_ids.begin() + n - 1},
              {d.labels.begin() + 1, d.labels.begin() + n},
              std::vector<int64_t>(static_cast<size_t>(n - 1))};
      std::iota(row.positions.begin(), row.positions.end(), int64_t{0});
      rows_.push_back(std::move(row));
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
  batch.positions.resize(static_cast<size_t>(rows * batch.seq_len));
  for (size_t r = 0; r < picked.size(); ++r) {
    const Row& row = *picked[r];
    const auto offset = static_cast<std::ptrdiff_t>(r * static_cast<size_t>(batch.seq_len));
    std::copy(row.inputs.begin(), row.inputs.end(), batch.inputs.begin() + offset);
    std::copy(row.labels.begin(), row.labels.end(), batch.labels.begin() + offset);
    std::copy(row.positions.begin(), row.positions.end(), batch.positions.begin() + offset);
    const auto real = static_cast<std::ptrdiff_t>(row.inputs.size());
    std::iota(batch.positions.begin() + offset + real,
              batch.positions.begin() + offset + batch.seq_len,
              row.positions.empty() ? 0 : row.positions.back() + 1);
    batch.tokens += static_cast<int64_t>(row.inputs.size());
    batch.valid_labels += std::count_if(row.labels.begin(), row.labels.end(),
                                        [](int64_t l) { return l != kIgnoreLabel; });
    batch.packed_documents =
        batch.packed_documents || std::count(row.positions.begin(), row.positions.end(), 0) > 1;
  }
  if (batch.packed_documents) {
    for (int64_t t = 0; t < rows * batch.seq_len; ++t) {
      if (t % batch.seq_len == 0 || batch.positions[static_cast<size_t>(t)] == 0) {
        batch.document_offsets.push_back(t);
      }
    }
    batch.document_offsets.push_back(rows * batch.seq_len);
  }
  return batch;
}

}  // namespace qlorad::trainer
