// Reads a training file into token documents: JSONL (one record per line) or a JSON array of
// records, in any of the layouts of data_formats.h (data.format, auto-detected from the first
// record). Text is encoded with the model directory's tokenizer (tokenizer.h); chat records go
// through the chat template (data.chat_template: auto reads the model's, or a family by name).
// With data.train_on_completions_only, labels are -100 except on completions and assistant turns.
// A bad record is an INVALID_ARGUMENT naming the file, the 1-based line (or record index of a
// JSON array) and the field; with data.skip_bad_lines it is counted and skipped instead.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/tokenizer/tokenizer.h"

namespace qlorad::trainer {

inline constexpr int64_t kIgnoreLabel = -100;

struct Document {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;  // aligned with input_ids (HF convention: the model shifts)
  std::string text = {};        // the rendered text, kept only with DatasetOptions::keep_text
};

struct Dataset {
  std::vector<Document> documents;
  int64_t skipped_lines = 0;  // bad records dropped because data.skip_bad_lines is set
};

struct ClassLabels;  // class_labels.h

struct DatasetOptions {
  int64_t vocab_size = 0;  // ids must be in [0, vocab_size)
  bool keep_text = false;  // fill Document::text (for inspection and tests)
  // The spec field that named the file, for errors about the file as a whole (data.validation
  // reads a file like data.path).
  std::string field = "data.path";
  // task: classification: each example becomes its tokens and one class (class_labels.h).
  const ClassLabels* classes = nullptr;
};

// `model_dir` holds tokenizer.json (and tokenizer_config.json); it is only read when the data is
// text. An empty dataset is an error naming data.path.
StatusOr<Dataset> LoadDataset(const DataSpec& spec, const std::string& model_dir,
                              const DatasetOptions& options);

// Calls `each` with every record of a JSONL file (or JSON array), `where` naming the file and its
// 1-based line (or record); a line that is not JSON comes as an error. `field` names the file's
// spec field in errors about the file as a whole.
using RecordFn = std::function<Status(const std::string& where, StatusOr<nlohmann::json> record)>;
Status ForEachRecord(const std::string& path, const std::string& field, const RecordFn& each);

}  // namespace qlorad::trainer
