// End-to-end runs of the trainer on the tiny model, in process, on the CPU.
#include "worker/trainer/train/trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/io/file_util.h"
#include "worker/trainer/io/safetensors.h"
#include "worker/trainer/model/adapter.h"
#include "worker/trainer/model/qlora_linear.h"
#include "worker/trainer/model/tiny_model.h"

namespace qlorad::trainer {
namespace {

using ::testing::HasSubstr;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;
namespace fs = std::filesystem;

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    ASSERT_TRUE(MakeTinyModel(*dir_ / "model", 0).ok());
    std::string data;
    const char* words[] = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"};
    for (int i = 0; i < 24; ++i) {
      data += std::string("{\"text\": \"the ") + words[i % 6] + " fox jumps over the " +
              words[(i + 1) % 6] + " dog\"}\n";
    }
    WriteFile(*dir_ / "data.jsonl", data);
  }
  static void TearDownTestSuite() { delete dir_; }

  // A spec for the tiny model; `extra` replaces whole sections (YAML flow maps).
  static JobSpec Spec(const std::string& out, const std::string& train = "",
                      const std::string& lora = "", const std::string& data = "",
                      const std::string& quantization = "{type: none}") {
    const std::string yaml =
        "name: unit\n"
        "model: {path: " +
        *dir_ / "model" +
        "}\n"
        "quantization: " +
        quantization +
        "\n"
        "lora: " +
        (lora.empty()
             ? "{r: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, v_proj, down_proj]}"
             : lora) +
        "\n"
        "data: " +
        (data.empty() ? "{path: " + *dir_ / "data.jsonl" +
                            ", max_seq_len: 32, packing: true, shuffle: true, seed: 1}"
                      : data) +
        "\n"
        "train: " +
        (train.empty() ? "{max_steps: 6, micro_batch_size: 2, grad_accum: 2, lr: 1.0e-2, "
                         "scheduler: constant, warmup_steps: 0, precision: fp32, seed: 3}"
                       : train) +
        "\n"
        "resources: {device: cpu}\n"
        "checkpoint: {every_steps: 0, keep: 2, output_dir: " +
        out + "}\n";
    auto spec = ParseJobSpec(yaml);
    EXPECT_TRUE(spec.ok()) << spec.status().ToString() << "\n" << yaml;
    return *spec;
  }

  static StatusOr<TrainResult> Run(const JobSpec& spec, TrainOptions options = {},
                                   std::string* events_out = nullptr) {
    std::ostringstream out, err;
    EventSink events(true, out, err);
    auto result = Train(spec, options, events);
    if (events_out != nullptr) *events_out = out.str();
    return result;
  }

  static TempDir* dir_;
};
TempDir* TrainerTest::dir_ = nullptr;

TEST_F(TrainerTest, LossGoesDownAndRerunIsBitwiseIdentical) {
  TempDir out;
  const std::string train =
      "{max_steps: 10, micro_batch_size: 2, grad_accum: 2, lr: 2.0e-2, scheduler: cosine, "
      "warmup_steps: 2, precision: bf16, seed: 3}";
  std::string events;
  auto first = Run(Spec(out / "a", train), {}, &events);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = Run(Spec(out / "b", train));
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(first->losses.size(), 10u);
  EXPECT_EQ(first->losses, second->losses);  // bitwise: same seed, same data order, same masks
  // Random init on 320 classes starts near ln(320) = 5.77; a few steps on repetitive text must
  // cut that clearly.
  EXPECT_GT(first->losses.front(), 4.5);
  EXPECT_LT(first->losses.back(), first->losses.front() - 0.5);

  int metrics = 0;
  nlohmann::json done;
  std::istringstream lines(events);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] == "metrics") {
      ++metrics;
      EXPECT_EQ(j["step"], metrics);
      EXPECT_EQ(j["total_steps"], 10);
      EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
      EXPECT_EQ(j["vram_allocated_bytes"], 0);  // CPU
    }
    if (j["event"] == "done") done = j;
  }
  EXPECT_EQ(metrics, 10);
  EXPECT_EQ(done["adapter_path"], fs::absolute(out / "a/adapter").string());
  EXPECT_EQ(done["final_loss"].get<double>(), first->losses.back());
}

TEST_F(TrainerTest, AdapterHasPeftKeysShapesAndConfig) {
  TempDir out;
  auto result =
      Run(Spec(out / "run", "{max_steps: 2, micro_batch_size: 2, lr: 1.0e-2, precision: fp32}"));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  auto file = SafetensorsFile::Open(result->adapter_path + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->tensors().size(), 2u * 3 * 2);  // layers x target modules x {A, B}
  auto shape = [&](const std::string& key) {
    const auto* t = file->Find(key);
    EXPECT_NE(t, nullptr) << key;
    if (t != nullptr) {
      EXPECT_EQ(t->dtype, "F32");
    }
    return t == nullptr ? std::vector<int64_t>{} : t->shape;
  };
  const std::string p = "base_model.model.model.layers.";
  EXPECT_EQ(shape(p + "0.self_attn.q_proj.lora_A.weight"), (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(shape(p + "0.self_attn.q_proj.lora_B.weight"), (std::vector<int64_t>{64, 4}));
  EXPECT_EQ(shape(p + "1.self_attn.v_proj.lora_B.weight"), (std::vector<int64_t>{32, 4}));
  EXPECT_EQ(shape(p + "1.mlp.down_proj.lora_A.weight"), (std::vector<int64_t>{4, 176}));
  EXPECT_EQ(shape(p + "1.mlp.down_proj.lora_B.weight"), (std::vector<int64_t>{64, 4}));
  EXPECT_EQ(file->Find(p + "0.self_attn.k_proj.lora_A.weight"), nullptr);  // not a target
  auto config = nlohmann::json::parse(ReadFile(result->adapter_path + "/adapter_config.json"));
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(config["r"], 4);
  EXPECT_TRUE(config["lora_alpha"].is_number_integer());
  EXPECT_EQ(config["lora_alpha"], 8);
  EXPECT_EQ(config["target_modules"], (nlohmann::json{"q_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(config["bias"], "none");
  EXPECT_EQ(config["fan_in_fan_out"], false);
  EXPECT_EQ(config["base_model_name_or_path"], *dir_ / "model");
}

TEST_F(TrainerTest, ResumeFromCheckpointMatchesUninterruptedRun) {
  TempDir out;
  auto full = Run(Spec(out / "full"));
  ASSERT_TRUE(full.ok()) << full.status().ToString();

  TrainOptions stop_after_3;
  int polls = 0;
  stop_after_3.should_stop = [&polls] { return ++polls == 3; };
  std::string events;
  auto stopped = Run(Spec(out / "part"), stop_after_3, &events);
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  EXPECT_TRUE(stopped->stopped);
  EXPECT_EQ(stopped->steps, 3);
  EXPECT_THAT(events, HasSubstr("\"event\":\"checkpoint\""));
  ASSERT_TRUE(fs::exists(out / "part/checkpoints/step-3/manifest.json"));
  ASSERT_TRUE(fs::exists(out / "part/checkpoints/step-3/shard-00000-of-00001.safetensors"));

  TrainOptions resume;
  resume.resume = out / "part";
  auto resumed = Run(Spec(out / "part"), resume);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_EQ(resumed->steps, 6);
  ASSERT_EQ(resumed->losses.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(stopped->losses[i], full->losses[i]);
    EXPECT_EQ(resumed->losses[i], full->losses[i + 3]) << "step " << i + 4;
  }
  EXPECT_EQ(ReadFile(out / "full/adapter/adapter_model.safetensors"),
            ReadFile(out / "part/adapter/adapter_model.safetensors"));
}

TEST_F(TrainerTest, MissingOrDamagedShardFilesAreErrorsNamingTheFile) {
  TempDir out;
  TrainOptions stop_after_2;
  int polls = 0;
  stop_after_2.should_stop = [&polls] { return ++polls == 2; };
  ASSERT_TRUE(Run(Spec(out / "part"), stop_after_2).ok());
  const fs::path step = out / "part/checkpoints/step-2";
  const fs::path shard = step / "shard-00000-of-00001.safetensors";
  const std::string bytes = ReadFile(shard);
  TrainOptions resume;
  resume.resume = step;

  std::ofstream(shard, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 2);
  auto truncated = Run(Spec(out / "again"), resume);
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(truncated.status().message(), HasSubstr(shard.string()));

  fs::remove(shard);
  auto missing = Run(Spec(out / "again"), resume);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr(shard.string() + ": cannot open"));

  // A split other than the one MakeShardSpec gives for that many shards.
  nlohmann::json layout = nlohmann::json::parse(ReadFile(step / "manifest.json"));
  layout["tensors"][0]["rows_per_rank"] = layout["tensors"][0]["rows_per_rank"].get<int>() + 1;
  std::ofstream(step / "manifest.json", std::ios::trunc) << layout.dump();
  auto split = Run(Spec(out / "again"), resume);
  ASSERT_FALSE(split.ok());
  EXPECT_THAT(split.status().message(),
              HasSubstr((step / "manifest.json").string() + ": " +
                        layout["tensors"][0]["tensor"].get<std::string>() + ": rows_per_rank"));

  std::ofstream(step / "manifest.json", std::ios::trunc) << "{\"format\": 1";
  auto manifest = Run(Spec(out / "again"), resume);
  ASSERT_FALSE(manifest.ok());
  EXPECT_THAT(manifest.status().message(), HasSubstr((step / "manifest.json").string()));
}

TEST_F(TrainerTest, ResumeWithoutACheckpointIsAClearError) {
  TempDir out;
  fs::create_directories(out / "empty");
  TrainOptions resume;
  resume.resume = out / "empty";
  auto result = Run(Spec(out / "run"), resume);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(result.status().message(),
              HasSubstr("--resume: no step-N checkpoint in " + out / "empty"));
}

TEST_F(TrainerTest, PeriodicCheckpointsKeepTheNewest) {
  TempDir out;
  JobSpec spec =
      Spec(out / "run", "{max_steps: 7, micro_batch_size: 1, lr: 1.0e-3, precision: fp32}");
  spec.checkpoint.every_steps = 2;
  spec.checkpoint.keep = 2;
  ASSERT_TRUE(Run(spec).ok());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out / "run/checkpoints")) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step-4", "step-6"}));
}

// Under the service (--attempt) each attempt checkpoints into its own folder and prunes only
// there, and a retry whose named checkpoint is gone resumes from the newest complete one left
// (or from step 0), where a plain --resume would fail as bad input.
TEST_F(TrainerTest, ServiceAttemptsKeepTheirOwnCheckpointsAndResumeFromWhatExists) {
  TempDir out;
  const std::string train =
      "{max_steps: 6, micro_batch_size: 1, lr: 1.0e-3, precision: fp32, seed: 3}";
  JobSpec spec = Spec(out / "run", train);
  spec.checkpoint.every_steps = 1;
  spec.checkpoint.keep = 1;
  auto full = Run(spec);
  ASSERT_TRUE(full.ok()) << full.status().ToString();

  JobSpec job = Spec(out / "job", train);
  job.checkpoint.every_steps = 1;
  job.checkpoint.keep = 1;
  // Attempt `number` of the job, resuming from `resume`, stopped (with a checkpoint) after
  // `steps` steps.
  auto attempt = [&job](int number, const std::string& resume, int steps, std::string* events) {
    TrainOptions options;
    options.attempt = number;
    if (!resume.empty()) options.resume = resume;
    auto polls = std::make_shared<int>(0);
    options.should_stop = [polls, steps] { return ++*polls == steps; };
    return Run(job, options, events);
  };
  ASSERT_TRUE(attempt(0, "", 4, nullptr).ok());
  const fs::path attempt0 = out / "job/checkpoints/attempt-0";
  ASSERT_TRUE(fs::exists(attempt0 / "step-4/state.json"));
  EXPECT_FALSE(fs::exists(attempt0 / "step-3")) << "keep: 1 prunes inside the attempt's folder";

  // Attempt 1 is told to resume from step-3, which attempt 0 pruned: step-4 is the newest left.
  std::string events;
  auto resumed = attempt(1, attempt0 / "step-3", 1, &events);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_EQ(resumed->steps, 5);
  EXPECT_EQ(resumed->losses.front(), full->losses[4]);
  EXPECT_THAT(events, HasSubstr("resumed from " + (attempt0 / "step-4").string()));
  EXPECT_TRUE(fs::exists(out / "job/checkpoints/attempt-1/step-5/state.json"));
  EXPECT_TRUE(fs::exists(attempt0 / "step-4/state.json")) << "attempt 1 pruned attempt 0's folder";

  // A named checkpoint that is whole wins over a newer one (here attempt 1's step-5).
  auto again = attempt(2, attempt0 / "step-4", 1, &events);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->steps, 5);

  // Nothing complete left at all (a step-N without state.json is a half-written one): step 0.
  // RemoveTree, not fs::remove_all: libtorch.so carries a copy of the latter that crashes here.
  ASSERT_TRUE(RemoveTree(out / "job/checkpoints").ok());
  fs::create_directories(out / "job/checkpoints/attempt-1/step-5");
  auto fresh = attempt(3, attempt0 / "step-4", 0, &events);  // 0: never stopped
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ(fresh->losses, full->losses);
  EXPECT_THAT(events, HasSubstr("no complete checkpoint in " + (attempt0 / "step-4").string()));
}

TEST_F(TrainerTest, LossIsTheMeanOverAllTokensOfTheStep) {
  // Without packing, rows have different lengths, so a mean of micro-batch means would differ
  // from one big batch; the token mean must not.
  TempDir out;
  const std::string data =
      "{path: " + *dir_ / "data.jsonl" + ", max_seq_len: 64, packing: false, shuffle: false}";
  const std::string lora = "{r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj]}";
  auto one =
      Run(Spec(out / "a", "{max_steps: 1, micro_batch_size: 4, grad_accum: 1, precision: fp32}",
               lora, data));
  auto four =
      Run(Spec(out / "b", "{max_steps: 1, micro_batch_size: 1, grad_accum: 4, precision: fp32}",
               lora, data));
  ASSERT_TRUE(one.ok() && four.ok());
  EXPECT_NEAR(one->losses[0], four->losses[0], 1e-5);
}

TEST_F(TrainerTest, BadInputsNameTheFieldOrFile) {
  TempDir out;
  WriteFile(out / "bad.jsonl", "{\"text\": \"fine\"}\n{\"text\": 5}\n");
  auto bad_line = Run(Spec(out / "r", "", "", "{path: " + out / "bad.jsonl" + "}"));
  ASSERT_FALSE(bad_line.ok());
  EXPECT_EQ(bad_line.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_line.status().message(), HasSubstr(out / "bad.jsonl" + ":2: "));

  JobSpec bad_target_spec = Spec(out / "r");
  bad_target_spec.lora.target_modules = {"q_proj", "qproj"};  // the spec parser would refuse it
  auto bad_target = Run(bad_target_spec);
  EXPECT_THAT(bad_target.status().message(), HasSubstr("lora.target_modules: 'qproj'"));

  // A truncated weights file is DataLoss naming the file.
  fs::copy(*dir_ / "model", out / "model");
  const std::string weights = out / "model/model.safetensors";
  const std::string bytes = ReadFile(weights);
  WriteFile(weights, bytes.substr(0, bytes.size() / 2));
  JobSpec spec = Spec(out / "r");
  spec.model.path = out / "model";
  auto truncated = Run(spec);
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(truncated.status().message(), HasSubstr(weights));

  JobSpec multi = Spec(out / "r");
  multi.resources.gpus = 2;
  EXPECT_THAT(Run(multi).status().message(), HasSubstr("launch --nproc 2"));
}

TEST_F(TrainerTest, Nf4TrainingRunsAndLearns) {
#ifndef QLORAD_HAVE_NF4_OPS
  GTEST_SKIP() << "built without qlorad_ops";
#endif
  ASSERT_TRUE(Nf4OpsAvailable(at::kCPU));
  TempDir out;
  const std::string train =
      "{max_steps: 6, micro_batch_size: 2, lr: 2.0e-2, scheduler: constant, warmup_steps: 0, "
      "precision: fp32}";
  std::string events;
  auto nf4 =
      Run(Spec(out / "nf4", train, "", "", "{type: nf4, double_quant: true, block_size: 64}"), {},
          &events);
  ASSERT_TRUE(nf4.ok()) << nf4.status().ToString();
  EXPECT_THAT(events, HasSubstr("quantized 14 linear layers (nf4)"));
  EXPECT_LT(nf4->losses.back(), nf4->losses.front() - 0.2);
  // Same data and adapter init on dense weights: NF4 rounding (4 bits per weight) must move the
  // first loss a little, never a lot.
  auto dense = Run(Spec(out / "dense", train));
  ASSERT_TRUE(dense.ok());
  EXPECT_NE(nf4->losses[0], dense->losses[0]);
  EXPECT_NEAR(nf4->losses[0], dense->losses[0], 0.02 * dense->losses[0]);
}

// QLORAD_INJECT_OOM_ROWS for one scope: forwards of more rows throw c10::OutOfMemoryError.
class InjectedOom {
 public:
  explicit InjectedOom(const std::string& rows) {
    setenv("QLORAD_INJECT_OOM_ROWS", rows.c_str(), 1);
  }
  ~InjectedOom() { unsetenv("QLORAD_INJECT_OOM_ROWS"); }
};

// The micro_batch_reduced events of a run, as (step, from_rows, to_rows, grad_accum).
std::vector<std::vector<int64_t>> Reductions(const std::string& events) {
  std::vector<std::vector<int64_t>> found;
  std::istringstream lines(events);
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["event"] != "micro_batch_reduced") continue;
    found.push_back({j["step"], j["from_rows"], j["to_rows"], j["grad_accum"]});
    EXPECT_EQ(j["seq_len"], 32) << line;
    EXPECT_THAT(j["message"].get<std::string>(), HasSubstr("Tried to allocate")) << line;
  }
  return found;
}

// The adapter's tensors as doubles, by name.
std::map<std::string, std::vector<double>> AdapterValues(const std::string& adapter_dir) {
  auto file = SafetensorsFile::Open(adapter_dir + "/adapter_model.safetensors");
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  std::map<std::string, std::vector<double>> values;
  if (!file.ok()) return values;
  for (const SafetensorsTensorInfo& t : file->tensors()) {
    EXPECT_EQ(t.dtype, "F32");
    const auto* data = reinterpret_cast<const float*>(file->Data(t));
    values[t.name].assign(data, data + t.numel());
  }
  return values;
}

// A step that runs out of memory is run again with its micro-batches halved until it fits: the
// same rows, the same divisor and (drawn afresh from the step's seed) the same dropout masks as
// a run configured with micro-batches of one row and grad_accum four times as large, so the
// same losses and adapter up to fp32 summation order. Later steps keep the small micro-batch.
TEST_F(TrainerTest, AStepOutOfMemoryIsRetriedWithHalvedMicroBatches) {
  TempDir out;
  const std::string train =
      "{max_steps: 4, micro_batch_size: 4, grad_accum: 1, lr: 1.0e-2, scheduler: constant, "
      "warmup_steps: 0, precision: fp32, seed: 3}";
  std::string events;
  auto retried = [&] {
    InjectedOom oom("1");
    return Run(Spec(out / "retried", train), {}, &events);
  }();
  ASSERT_TRUE(retried.ok()) << retried.status().ToString();
  EXPECT_EQ(Reductions(events), (std::vector<std::vector<int64_t>>{{1, 4, 2, 2}, {1, 2, 1, 4}}));

  auto small = Run(Spec(out / "small",
                        "{max_steps: 4, micro_batch_size: 1, grad_accum: 4, lr: 1.0e-2, "
                        "scheduler: constant, warmup_steps: 0, precision: fp32, seed: 3}"));
  ASSERT_TRUE(small.ok()) << small.status().ToString();
  auto unsplit = Run(Spec(out / "unsplit", train));
  ASSERT_TRUE(unsplit.ok()) << unsplit.status().ToString();
  ASSERT_EQ(retried->losses.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(retried->losses[i], small->losses[i], 1e-5 * small->losses[i]) << "step " << i + 1;
  }
  const auto got = AdapterValues(retried->adapter_path);
  const auto want = AdapterValues(small->adapter_path);
  ASSERT_EQ(got.size(), want.size());
  double largest = 0;
  for (const auto& [name, values] : want) {
    for (double v : values) largest = std::max(largest, std::abs(v));
  }
  for (const auto& [name, values] : want) {
    ASSERT_EQ(got.at(name).size(), values.size()) << name;
    for (size_t k = 0; k < values.size(); ++k) {
      ASSERT_NEAR(got.at(name)[k], values[k], 1e-5 * largest) << name << "[" << k << "]";
    }
  }
  // The check has teeth: the unsplit run's dropout masks differ (drawn per forward), so its
  // losses after the first step do too.
  EXPECT_GT(std::abs(unsplit->losses[3] - small->losses[3]), 1e-4);
}

// The halved micro-batch is part of the checkpoint: a resumed attempt starts at that size instead
// of running out of memory again to find it, and trains as the attempt that never stopped.
TEST_F(TrainerTest, AReducedMicroBatchIsKeptAcrossAResume) {
  TempDir out;
  const std::string train =
      "{max_steps: 4, micro_batch_size: 4, grad_accum: 1, lr: 1.0e-2, scheduler: constant, "
      "warmup_steps: 0, precision: fp32, seed: 3}";
  InjectedOom oom("1");
  std::string whole_events;
  auto whole = Run(Spec(out / "whole", train), {}, &whole_events);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  EXPECT_EQ(Reductions(whole_events).size(), 2u);

  TrainOptions stop_after_2;
  int polls = 0;
  stop_after_2.should_stop = [&polls] { return ++polls == 2; };
  std::string first_events;
  auto stopped = Run(Spec(out / "part", train), stop_after_2, &first_events);
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  ASSERT_TRUE(stopped->stopped);
  EXPECT_EQ(stopped->steps, 2);
  EXPECT_EQ(Reductions(first_events).size(), 2u);

  TrainOptions resume;
  resume.resume = out / "part";
  std::string events;
  auto resumed = Run(Spec(out / "part", train), resume, &events);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_TRUE(Reductions(events).empty()) << events;
  EXPECT_THAT(events, HasSubstr("micro-batches of 1 row(s), as the checkpoint's attempt ran after "
                                "running out of device memory (train.micro_batch_size 4)"));
  ASSERT_EQ(resumed->losses.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(resumed->losses[i], whole->losses[i + 2]) << "step " << i + 3;
  }
}

// When even one row per forward does not fit, the job fails naming the rows' length, the spec
// fields that set it, and what torch said it tried to allocate.
TEST_F(TrainerTest, AStepOutOfMemoryAtOneRowFailsNamingTheSequenceLength) {
  TempDir out;
  std::string events;
  InjectedOom oom("0");
  auto failed =
      Run(Spec(out / "r", "{max_steps: 2, micro_batch_size: 4, precision: fp32}"), {}, &events);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), StatusCode::kFailedPrecondition);
  const std::string& message = failed.status().message();
  EXPECT_THAT(message, HasSubstr("step 1: out of memory with micro-batches of 1 row(s) of 32 "
                                 "tokens (Tried to allocate"));
  EXPECT_THAT(message, HasSubstr("data.max_seq_len 32, train.micro_batch_size 4 halved down to 1"));
  EXPECT_EQ(Reductions(events), (std::vector<std::vector<int64_t>>{{1, 4, 2, 2}, {1, 2, 1, 4}}));
}

// fsdp gathers and reduce-scatters inside forward and backward: a rank retrying alone would leave
// its peers in a collective it no longer matches, so the step is not retried, even on one rank.
TEST_F(TrainerTest, UnderFsdpAStepOutOfMemoryFailsSayingToLowerTheMicroBatch) {
  TempDir out;
  std::string events;
  InjectedOom oom("1");
  JobSpec spec = Spec(out / "r", "{max_steps: 2, micro_batch_size: 4, precision: fp32}");
  spec.parallel.strategy = StrategyChoice::kFsdp;
  auto failed = Run(spec, {}, &events);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(),
              HasSubstr("step 1: out of memory with micro-batches of 4 row(s) of 32 tokens"));
  EXPECT_THAT(failed.status().message(),
              HasSubstr("Under fsdp a step is not retried with smaller micro-batches"));
  EXPECT_TRUE(Reductions(events).empty());
}

TEST_F(TrainerTest, ABadOomInjectionIsAnErrorNamingTheVariable) {
  TempDir out;
  InjectedOom oom("some");
  auto failed = Run(Spec(out / "r"));
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("QLORAD_INJECT_OOM_ROWS: must be a whole"));
}

}  // namespace
}  // namespace qlorad::trainer
