// task: classification's labels (data.label_field, data.labels): the label set in class-index
// order, and each example as a document the causal batcher carries unchanged. An example's
// document is its tokens (cut to data.max_seq_len, as a right-truncating tokenizer keeps the
// start) plus one filler token, with every label -100 but the filler's, which holds the class
// index: after the batcher's shift the class is the target of the example's last token, the
// position whose hidden state Hugging Face's LlamaForSequenceClassification pools, and the
// filler is never an input. So each row carries exactly one valid label, and the classifier
// (train/classification_head.h) reads the hidden states where the label is not -100.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/data/dataset.h"

namespace qlorad::trainer {

struct ClassLabels {
  std::string field;               // data.label_field
  std::vector<std::string> names;  // class index -> label
  int64_t max_seq_len = 0;         // tokens kept of each example
};

// data.labels as given, else every value found under data.label_field in data.path, sorted
// (numerically when all are integers, else as strings), so every rank and every retry of a job
// numbers the classes alike. A record without the field is an error naming file:line and the
// field (skipped with data.skip_bad_lines); fewer than two labels is an error.
StatusOr<ClassLabels> ResolveClassLabels(const DataSpec& spec);

// `spec` with data.labels resolved as above when its task is classification: the class order
// the rest of the run (and the adapter's labels.json) reads from the spec.
StatusOr<JobSpec> WithClassLabels(JobSpec spec);

// The record's label as text (a string, or an integer's digits); errors name the field.
StatusOr<std::string> RecordLabel(const nlohmann::json& record, const std::string& field);

// `tokens` (the example's encoded text) as the document described above; a label outside the
// set is an error naming the field and the set.
StatusOr<Document> ClassifiedExample(Document tokens, const nlohmann::json& record,
                                     const ClassLabels& classes);

}  // namespace qlorad::trainer
