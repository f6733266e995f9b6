// task: classification in the job spec: data.label_field and data.labels, packing off by default,
// and what is refused up front, each error naming the field.
#include <gtest/gtest.h>

#include "common/jobspec.h"

namespace qlorad {
namespace {

const char* kClassification = R"(
name: demo
task: classification
model: {path: /models/tiny}
)";

StatusOr<JobSpec> Parse(const std::string& data, const std::string& rest = "") {
  return ParseJobSpec(std::string(kClassification) + "data: " + data + "\n" + rest);
}

std::string ErrorOf(const std::string& data, const std::string& rest = "") {
  auto spec = Parse(data, rest);
  EXPECT_FALSE(spec.ok()) << data << " / " << rest;
  return spec.ok() ? "" : spec.status().message();
}

TEST(JobSpecTask, CausalLmIsTheDefault) {
  auto spec = ParseJobSpec("name: a\nmodel: {path: m}\ndata: {path: d.jsonl}\n");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->task, Task::kCausalLm);
  EXPECT_TRUE(spec->data.packing);
  EXPECT_TRUE(spec->data.label_field.empty());
}

TEST(JobSpecTask, ClassificationReadsItsFieldsAndPadsEachExample) {
  auto spec = Parse("{path: d.jsonl, label_field: sentiment, labels: [neg, 2, pos]}");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->task, Task::kClassification);
  EXPECT_EQ(spec->data.label_field, "sentiment");
  EXPECT_EQ(spec->data.labels, (std::vector<std::string>{"neg", "2", "pos"}));
  EXPECT_FALSE(spec->data.packing);
  auto unpacked = Parse("{path: d.jsonl, label_field: l, packing: false}");
  ASSERT_TRUE(unpacked.ok()) << unpacked.status().message();
}

TEST(JobSpecTask, BadSettingsNameTheField) {
  EXPECT_EQ(ErrorOf("{path: d.jsonl}"),
            "data.label_field: is required with task: classification (the record field holding "
            "each example's label)");
  EXPECT_EQ(ErrorOf("{path: d.jsonl, label_field: l, packing: true}"),
            "data.packing: task: classification pads each example to its own row; set false");
  EXPECT_EQ(ErrorOf("{path: d.jsonl, label_field: l, labels: [a]}"),
            "data.labels: needs at least two labels");
  EXPECT_EQ(ErrorOf("{path: d.jsonl, label_field: l, labels: [a, b, a]}"),
            "data.labels: 'a' is listed twice");
  EXPECT_TRUE(Parse("{path: d.jsonl, label_field: l}", "resources: {gpus: 2}\n").ok());
  EXPECT_EQ(ErrorOf("{path: d.jsonl, label_field: l}",
                    "resources: {gpus: 2}\nparallel: {strategy: fsdp, cpu_offload: true}\n"),
            "parallel.cpu_offload: is not supported with task: classification (the score head "
            "stays on the device); set false");
  EXPECT_EQ(
      ErrorOf("{path: d.jsonl, label_field: l}", "lora: {target_modules: [q_proj, lm_head]}\n"),
      "lora.target_modules: lm_head is not used by task: classification (the score head is "
      "trained whole)");
  auto regression = ParseJobSpec("name: a\ntask: regression\nmodel: {path: m}\ndata: {path: d}\n");
  ASSERT_FALSE(regression.ok());
  EXPECT_EQ(regression.status().message(),
            "task: must be one of causal_lm, classification, got 'regression'");
  auto causal = [](const std::string& data) {
    auto spec = ParseJobSpec("name: a\nmodel: {path: m}\ndata: " + data + "\n");
    return spec.ok() ? std::string() : spec.status().message();
  };
  EXPECT_EQ(causal("{path: d.jsonl, label_field: l}"),
            "data.label_field: only for task: classification");
  EXPECT_EQ(causal("{path: d.jsonl, labels: [a, b]}"),
            "data.labels: only for task: classification");
}

}  // namespace
}  // namespace qlorad
