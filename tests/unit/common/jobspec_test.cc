#include "common/jobspec.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <utility>
#include <vector>

namespace qlorad {
namespace {

const char* kMinimal = R"(
name: demo
model: {path: /models/tiny}
data: {path: data/train.jsonl}
)";

std::string ErrorOf(const std::string& yaml) {
  auto spec = ParseJobSpec(yaml);
  EXPECT_FALSE(spec.ok()) << "expected an error for:\n" << yaml;
  return spec.ok() ? "" : spec.status().message();
}

TEST(JobSpec, MinimalSpecGetsTheDocumentedDefaults) {
  auto spec = ParseJobSpec(kMinimal);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->name, "demo");
  EXPECT_EQ(spec->quantization.type, QuantizationType::kNf4);
  EXPECT_TRUE(spec->quantization.double_quant);
  EXPECT_EQ(spec->quantization.block_size, 64);
  EXPECT_EQ(spec->lora.r, 16);
  EXPECT_EQ(spec->lora.target_modules.size(), 7u);
  EXPECT_DOUBLE_EQ(spec->train.lr, 2e-4);
  ASSERT_TRUE(spec->train.max_grad_norm.has_value());
  EXPECT_DOUBLE_EQ(*spec->train.max_grad_norm, 1.0);
  EXPECT_EQ(spec->train.loss_chunk_size, 0);
  EXPECT_EQ(spec->checkpoint.output_dir, "runs/demo");
  EXPECT_EQ(spec->scheduling.max_restarts, 3);
}

TEST(JobSpec, FullSpecFromTheDesignParses) {
  auto spec = ParseJobSpec(R"(
name: llama3-alpaca
model: {path: /models/Llama-3.2-1B}
quantization: {type: nf4, double_quant: true, block_size: 64}
lora: {r: 8, alpha: 32, dropout: 0.05, target_modules: [q_proj, v_proj], init_from: null, use_rslora: true}
data: {path: data/train.jsonl, format: auto, max_seq_len: 512, packing: true, shuffle: false, seed: 3,
       train_on_completions_only: true, chat_template: auto}
train: {max_steps: 10, micro_batch_size: 2, grad_accum: 2, lr: 1.0e-3, scheduler: linear, warmup_steps: 1,
        weight_decay: 0.01, betas: [0.8, 0.95], eps: 1.0e-6, max_grad_norm: null, seed: 7,
        precision: fp32, activation_checkpointing: false, loss_chunk_size: 4096}
resources: {gpus: 2, device: cpu}
scheduling: {priority: 70, max_restarts: 1}
parallel: {strategy: fsdp, reshard_after_forward: false, cpu_offload: true}
checkpoint: {every_steps: 0, keep: 2, output_dir: out/x}
)");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->lora.r, 8);
  EXPECT_NEAR(spec->lora.Scale(), 32.0 / std::sqrt(8.0), 1e-12);
  EXPECT_FALSE(spec->train.max_grad_norm.has_value());
  EXPECT_EQ(spec->train.loss_chunk_size, 4096);
  EXPECT_DOUBLE_EQ(spec->train.betas[1], 0.95);
  EXPECT_EQ(spec->resources.gpus, 2);
  EXPECT_EQ(spec->parallel.strategy, StrategyChoice::kFsdp);
  EXPECT_EQ(spec->checkpoint.every_steps, 0);
  EXPECT_EQ(spec->checkpoint.output_dir, "out/x");
  EXPECT_EQ(spec->data.seed, 3u);
  EXPECT_EQ(spec->train.seed, 7u);
  EXPECT_EQ(spec->train.activation_checkpointing, CheckpointingChoice::kOff);
}

// The named choices become types once, here; a bad name lists the good ones.
TEST(JobSpec, ChoicesParseToTheirTypesAndBadNamesListTheChoices) {
  auto spec = ParseJobSpec(std::string(kMinimal) +
                           "quantization: {type: none}\ntrain: {scheduler: constant, precision: "
                           "fp32}\nresources: {device: cpu}\nparallel: {strategy: ddp}\n");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->quantization.type, QuantizationType::kNone);
  EXPECT_EQ(spec->train.scheduler, Scheduler::kConstant);
  EXPECT_EQ(spec->train.precision, Precision::kFp32);
  EXPECT_EQ(spec->lora.compute_precision, Precision::kFp32);  // auto: the training precision
  EXPECT_EQ(spec->resources.device, DeviceChoice::kCpu);
  EXPECT_EQ(spec->parallel.strategy, StrategyChoice::kDdp);
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "parallel: {strategy: zero}"),
            "parallel.strategy: must be one of auto, ddp, fsdp, single, got 'zero'");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "resources: {device: tpu}"),
            "resources.device: must be one of auto, cpu, cuda, got 'tpu'");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "resources: {ignore_memory_estimate: maybe}"),
            "resources.ignore_memory_estimate: expected true or false, got 'maybe'");
  auto ignoring = ParseJobSpec(std::string(kMinimal) + "resources: {ignore_memory_estimate: true}");
  ASSERT_TRUE(ignoring.ok()) << ignoring.status().ToString();
  EXPECT_TRUE(ignoring->resources.ignore_memory_estimate);
  EXPECT_FALSE(spec->resources.ignore_memory_estimate);
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "train: {scheduler: step}"),
            "train.scheduler: must be one of constant, cosine, linear, got 'step'");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "train: {precision: fp8}"),
            "train.precision: must be one of bf16, fp16, fp32, got 'fp8'");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "quantization: {type: int8}"),
            "quantization.type: must be one of nf4, none, got 'int8'");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "train: {activation_checkpointing: maybe}"),
            "train.activation_checkpointing: must be one of auto, false, true, got 'maybe'");
}

// Offload is auto by default, and true needs checkpointing that is not false.
TEST(JobSpec, ActivationOffloadIsAutoAndNeedsCheckpointing) {
  EXPECT_EQ(ParseJobSpec(kMinimal)->train.activation_offload, CheckpointingChoice::kAuto);
  auto spec = ParseJobSpec(std::string(kMinimal) + "train: {activation_offload: true}\n");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->train.activation_offload, CheckpointingChoice::kOn);
  EXPECT_EQ(ErrorOf(std::string(kMinimal) +
                    "train: {activation_offload: true, activation_checkpointing: false}"),
            "train.activation_offload: true offloads the inputs checkpointing keeps, so it needs "
            "activation_checkpointing true or auto, got false");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "train: {activation_offload: yes}"),
            "train.activation_offload: must be one of auto, false, true, got 'yes'");
}

// auto by default: the trainer picks off when the step fits without it.
TEST(JobSpec, ActivationCheckpointingIsAutoUnlessSaid) {
  EXPECT_EQ(ParseJobSpec(kMinimal)->train.activation_checkpointing, CheckpointingChoice::kAuto);
  for (const auto& [text, want] :
       {std::pair{"true", CheckpointingChoice::kOn}, std::pair{"false", CheckpointingChoice::kOff},
        std::pair{"auto", CheckpointingChoice::kAuto}}) {
    auto spec =
        ParseJobSpec(std::string(kMinimal) + "train: {activation_checkpointing: " + text + "}\n");
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    EXPECT_EQ(spec->train.activation_checkpointing, want) << text;
  }
}

template <typename E>
void ExpectNamesRoundTrip() {
  for (const auto& [name, value] : ChoiceNames<E>::kNames) {
    EXPECT_EQ(NameOf(value), name);
    EXPECT_EQ(ChoiceNamed<E>(name), value);
  }
  EXPECT_EQ(ChoiceNamed<E>("no such name"), std::nullopt);
}

TEST(JobSpec, EveryChoiceNameRoundTrips) {
  ExpectNamesRoundTrip<QuantizationType>();
  ExpectNamesRoundTrip<Precision>();
  ExpectNamesRoundTrip<Scheduler>();
  ExpectNamesRoundTrip<CheckpointingChoice>();
  ExpectNamesRoundTrip<DeviceChoice>();
  ExpectNamesRoundTrip<StrategyChoice>();
}

TEST(JobSpec, ErrorsNameTheField) {
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "train: {lr: -1}"), "train.lr: must be > 0, got -1");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "train: {learning_rate: 1}"),
            "train.learning_rate: unknown key");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "optimizer: {}"), "optimizer: unknown key");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "train: {max_steps: many}"),
            "train.max_steps: expected an integer, got 'many'");
  EXPECT_EQ(ErrorOf("name: x\ndata: {path: d}\n"),
            "model.path: is required (a Hugging Face model directory)");
  EXPECT_NE(ErrorOf(std::string(kMinimal) + "lora: {target_modules: [qproj]}")
                .find("lora.target_modules: must be one of"),
            std::string::npos);
  EXPECT_NE(ErrorOf(std::string(kMinimal) + "quantization: {type: int8}").find("quantization.type"),
            std::string::npos);
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "train: {loss_chunk_size: big}"),
            "train.loss_chunk_size: must be 'auto' or a positive integer, got 'big'");
  EXPECT_EQ(ErrorOf("name: x\nmodel: {path: /m, revision: main}\ndata: {path: d}\n"),
            "model.revision: unknown key");
}

// Found by tests/fuzz/jobspec_fuzzer (corpus: regression-list-as-key.yaml): a key that is not a
// name threw out of the parser, so the coordinator answered UNKNOWN and the trainer aborted.
TEST(JobSpec, AKeyThatIsNotANameIsRefusedNamingItsSection) {
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "lora: {r: 16, [0.9, 0.999]: 1}"),
            "lora: keys must be names, got '[0.9, 0.999]'");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "? {a: 1}\n: x\n"),
            "the spec: keys must be names, got '{a: 1}'");
}

TEST(JobSpec, ParallelTimeoutIsAPositiveNumberOfSeconds) {
  auto defaults = ParseJobSpec(kMinimal);
  ASSERT_TRUE(defaults.ok()) << defaults.status().ToString();
  EXPECT_DOUBLE_EQ(defaults->parallel.timeout_s, 600);
  for (const auto& [yaml, seconds] : std::vector<std::pair<std::string, double>>{
           {"parallel: {timeout_s: 5}", 5}, {"parallel: {timeout_s: 0.5}", 0.5}}) {
    auto spec = ParseJobSpec(std::string(kMinimal) + yaml);
    ASSERT_TRUE(spec.ok()) << yaml << ": " << spec.status().ToString();
    EXPECT_DOUBLE_EQ(spec->parallel.timeout_s, seconds) << yaml;
  }
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "parallel: {timeout_s: 0}"),
            "parallel.timeout_s: must be a positive number of seconds, got 0");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "parallel: {timeout_s: -3}"),
            "parallel.timeout_s: must be a positive number of seconds, got -3");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "parallel: {timeout_s: .inf}"),
            "parallel.timeout_s: must be a positive number of seconds, got inf");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "parallel: {timeout_s: soon}"),
            "parallel.timeout_s: expected a number, got 'soon'");
}

TEST(JobSpec, LoraComputePrecisionIsFp32OrTheTrainingPrecision) {
  // auto: the training precision.
  EXPECT_EQ(ParseJobSpec(kMinimal)->lora.compute_precision, Precision::kBf16);
  EXPECT_EQ(
      ParseJobSpec(std::string(kMinimal) + "train: {precision: fp16}")->lora.compute_precision,
      Precision::kFp16);
  auto fp32 = ParseJobSpec(std::string(kMinimal) + "lora: {compute_precision: fp32}");
  ASSERT_TRUE(fp32.ok()) << fp32.status().ToString();
  EXPECT_EQ(fp32->lora.compute_precision, Precision::kFp32);
  auto bf16 = ParseJobSpec(std::string(kMinimal) + "lora: {compute_precision: bf16}");
  ASSERT_TRUE(bf16.ok()) << bf16.status().ToString();  // train.precision defaults to bf16
  EXPECT_EQ(bf16->lora.compute_precision, Precision::kBf16);
  EXPECT_NE(ErrorOf(std::string(kMinimal) + "lora: {compute_precision: fp8}")
                .find("lora.compute_precision: must be one of"),
            std::string::npos);
  EXPECT_EQ(
      ErrorOf(std::string(kMinimal) + "lora: {compute_precision: bf16}\ntrain: {precision: fp16}"),
      "lora.compute_precision: bf16 needs train.precision: bf16 (the adapters take the "
      "activations as they are), got train.precision: fp16; use fp32 or fp16");
}

TEST(JobSpec, MalformedYamlNamesTheLine) {
  const std::string msg = ErrorOf("name: x\nmodel: {path: [unclosed\n");
  EXPECT_NE(msg.find("malformed YAML at line"), std::string::npos) << msg;
  EXPECT_EQ(ErrorOf(""), "the spec is empty");
  EXPECT_EQ(ErrorOf("- a\n- b\n"), "the spec must be a YAML mapping of sections");
}

TEST(JobSpec, CheckFilesNamesTheMissingOne) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("jobspec_test_" + std::to_string(::getpid()));
  fs::create_directories(dir / "model");
  auto spec = ParseJobSpec(std::string("name: x\nmodel: {path: ") + (dir / "model").string() +
                           "}\ndata: {path: " + (dir / "d.jsonl").string() + "}\n");
  ASSERT_TRUE(spec.ok());
  EXPECT_NE(CheckJobSpecFiles(*spec).message().find("model.path: no config.json"),
            std::string::npos);
  std::ofstream(dir / "model" / "config.json") << "{}";
  EXPECT_NE(CheckJobSpecFiles(*spec).message().find("data.path: no such file"), std::string::npos);
  std::ofstream(dir / "d.jsonl") << "{}\n";
  EXPECT_TRUE(CheckJobSpecFiles(*spec).ok());
  fs::remove_all(dir);
}

// A relative path is shown with the directory it was resolved against (a worker's --work-dir).
TEST(JobSpec, CheckFilesShowsWhereARelativePathWasLookedFor) {
  auto spec = ParseJobSpec("name: x\nmodel: {path: runs/no-such-model}\ndata: {path: d.jsonl}\n");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(CheckJobSpecFiles(*spec).message(),
            "model.path: not a directory: runs/no-such-model (relative: resolved against " +
                std::filesystem::current_path().string() +
                "; a worker runs the trainer in its --work-dir)");
}

}  // namespace
}  // namespace qlorad
