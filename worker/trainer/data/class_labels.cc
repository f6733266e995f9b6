#include "worker/trainer/data/class_labels.h"

#include <algorithm>
#include <set>

namespace qlorad::trainer {

using nlohmann::json;

namespace {

bool IsInteger(const std::string& s) {
  const size_t digits = s.size() > 1 && s[0] == '-' ? 1 : 0;
  return s.size() > digits && s.size() - digits <= 18 &&
         std::all_of(s.begin() + static_cast<std::ptrdiff_t>(digits), s.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

std::string Listed(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return "[" + out + "]";
}

}  // namespace

StatusOr<std::string> RecordLabel(const json& record, const std::string& field) {
  if (!record.is_object() || !record.contains(field)) {
    return InvalidArgument(field + ": missing (data.label_field)");
  }
  const json& value = record[field];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
  return InvalidArgument(field + ": expected a string or an integer label, got " + value.dump());
}

StatusOr<ClassLabels> ResolveClassLabels(const DataSpec& spec) {
  ClassLabels classes{spec.label_field, spec.labels, spec.max_seq_len};
  if (!classes.names.empty()) return classes;
  std::set<std::string> found;
  QLORAD_RETURN_IF_ERROR(ForEachRecord(
      spec.path, "data.path", [&](const std::string& where, StatusOr<json> record) -> Status {
        // Lines that are not JSON are reported (or skipped) when the dataset loads.
        if (!record.ok()) return Status::Ok();
        StatusOr<std::string> label = RecordLabel(*record, spec.label_field);
        if (!label.ok()) {
          return spec.skip_bad_lines ? Status::Ok()
                                     : InvalidArgument(where + ": " + label.status().message());
        }
        found.insert(*label);
        return Status::Ok();
      }));
  classes.names.assign(found.begin(), found.end());
  if (std::all_of(classes.names.begin(), classes.names.end(), IsInteger)) {
    std::sort(
        classes.names.begin(), classes.names.end(),
        [](const std::string& a, const std::string& b) { return std::stoll(a) < std::stoll(b); });
  }
  if (classes.names.size() < 2) {
    return InvalidArgument("data.label_field: " + spec.path + " holds " +
                           std::to_string(classes.names.size()) + " distinct value(s) of '" +
                           spec.label_field + "' " + Listed(classes.names) +
                           "; classification needs at least two (or list them in data.labels)");
  }
  return classes;
}

StatusOr<JobSpec> WithClassLabels(JobSpec spec) {
  if (spec.task != Task::kClassification || !spec.data.labels.empty()) return spec;
  QLORAD_ASSIGN_OR_RETURN(ClassLabels classes, ResolveClassLabels(spec.data));
  spec.data.labels = std::move(classes.names);
  return spec;
}

StatusOr<Document> ClassifiedExample(Document tokens, const json& record,
                                     const ClassLabels& classes) {
  QLORAD_ASSIGN_OR_RETURN(const std::string label, RecordLabel(record, classes.field));
  const auto it = std::find(classes.names.begin(), classes.names.end(), label);
  if (it == classes.names.end()) {
    return InvalidArgument(classes.field + ": '" + label + "' is not one of the labels " +
                           Listed(classes.names));
  }
  std::vector<int64_t>& ids = tokens.input_ids;
  if (ids.empty()) return InvalidArgument("the example has no tokens to classify");
  if (static_cast<int64_t>(ids.size()) > classes.max_seq_len) {
    ids.resize(static_cast<size_t>(classes.max_seq_len));
  }
  tokens.labels.assign(ids.size(), kIgnoreLabel);
  ids.push_back(ids.back());  // the filler: never an input (see the header)
  tokens.labels.push_back(it - classes.names.begin());
  return tokens;
}

}  // namespace qlorad::trainer
