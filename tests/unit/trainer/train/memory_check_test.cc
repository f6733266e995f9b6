#include "worker/trainer/train/memory_check.h"

#include <gtest/gtest.h>

#include <sstream>

#include "kernels/torch/nf4_ops.h"
#include "worker/trainer/model/llama_model.h"
#include "worker/trainer/model/qlora.h"
#include "worker/trainer/model/tiny_model.h"

namespace qlorad::trainer {
namespace {

int64_t BytesOf(const at::Tensor& t) {
  return t.defined() ? static_cast<int64_t>(t.nbytes()) : 0;
}

// What the model's frozen tensors hold, counted tensor by tensor.
int64_t FrozenBytesOf(const LlamaModel& model) {
  int64_t bytes = 0;
  for (const auto& [name, tensor] : model->NamedFrozenTensors()) bytes += BytesOf(tensor);
  for (const auto& [name, layer] : model->NamedLinears()) {
    if (const auto& nf4 = layer->nf4_weight()) {
      for (const at::Tensor* t :
           {&nf4->packed, &nf4->absmax, &nf4->nested_absmax, &nf4->nested_code, &nf4->offset}) {
        bytes += BytesOf(*t);
      }
    } else {
      bytes += BytesOf(layer->dense_weight());
    }
  }
  return bytes;
}

// The estimate's simple terms are exact: the frozen bytes and the LoRA parameter count of the
// tiny model as built, quantized and adapted on the CPU.
TEST(MemoryCheckTest, FrozenBytesAndLoraParametersMatchTheRealModel) {
  struct Case {
    QuantizationType type;
    bool double_quant;
    int block_size;
    std::vector<std::string> targets;
  };
  const std::vector<std::string> all = LoraSpec{}.target_modules;
  const Case cases[] = {{QuantizationType::kNf4, true, 64, all},
                        {QuantizationType::kNf4, false, 64, all},
                        {QuantizationType::kNf4, true, 128, {"q_proj", "v_proj"}},
                        {QuantizationType::kNone, true, 64, all}};
  for (const Case& c : cases) {
    auto model = BuildLlamaModel(
        TinyLlamaConfig(),
        [](const std::string&, const std::vector<int64_t>& shape) -> StatusOr<at::Tensor> {
          return at::randn(shape);
        },
        at::kCPU, at::kFloat);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    JobSpec spec;
    spec.train.precision = Precision::kFp32;
    spec.quantization = {c.type, c.double_quant, c.block_size};
    spec.lora.target_modules = c.targets;
    auto summary = ApplyQLora(*model, spec.quantization, spec.lora, /*seed=*/0);
    ASSERT_TRUE(summary.ok()) << summary.status().ToString();
    const MemoryEstimate e =
        EstimateMemory(MemoryJobOfRun(spec, TinyLlamaConfig(), 1, parallel::Strategy::kSingle));
    EXPECT_EQ(e.frozen_weights, FrozenBytesOf(*model))
        << "double_quant " << c.double_quant << ", block_size " << c.block_size;
    EXPECT_EQ(e.lora_parameters, summary->trainable_parameters);
  }
}

// common/model_shape.h reads config.json for the coordinator; it must read the sizes the
// trainer's parser reads.
TEST(MemoryCheckTest, TheCoordinatorsShapeReaderAgreesWithTheTrainersParser) {
  LlamaConfig tied = TinyLlamaConfig();
  tied.tie_word_embeddings = true;
  tied.head_dim = 32;  // not hidden / heads: read, not derived
  for (const LlamaConfig& config : {TinyLlamaConfig(), tied}) {
    const std::string text = LlamaConfigJson(config);
    auto parsed = ParseLlamaConfig(text, "config.json");
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    auto shape = ParseModelShape(text, "config.json");
    ASSERT_TRUE(shape.ok()) << shape.status().ToString();
    EXPECT_EQ(*shape, ShapeOf(*parsed));
  }
  // Without the optional fields, the defaults agree too.
  const std::string minimal =
      R"({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "vocab_size": 300})";
  auto parsed = ParseLlamaConfig(minimal, "config.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*ParseModelShape(minimal, "config.json"), ShapeOf(*parsed));
}

struct Checked {
  Status status;
  std::string log;
};

Checked Check(const JobSpec& spec, std::optional<int64_t> free_bytes) {
  std::ostringstream out, err;
  EventSink events(/*json=*/false, out, err);
  const MemoryJob job = MemoryJobOfRun(spec, TinyLlamaConfig(), 1, parallel::Strategy::kSingle);
  return {CheckMemory(spec, job, free_bytes, events), err.str()};
}

TEST(MemoryCheckTest, RefusesAJobThatDoesNotFitNamingTheLargestContext) {
  JobSpec spec;
  spec.train.precision = Precision::kFp32;
  spec.train.micro_batch_size = 2;
  spec.data.max_seq_len = 65536;
  spec.train.activation_checkpointing = CheckpointingChoice::kOff;
  MemoryJob job = MemoryJobOfRun(spec, TinyLlamaConfig(), 1, parallel::Strategy::kSingle);
  const int64_t peak = EstimateMemory(job).peak;

  EXPECT_TRUE(Check(spec, std::nullopt).status.ok());  // a CPU: nothing to check
  const Checked fits = Check(spec, peak * 10 / 9 + 1024);
  EXPECT_TRUE(fits.status.ok()) << fits.status.ToString();
  EXPECT_NE(fits.log.find("memory estimate: " + FormatMemory(peak)), std::string::npos) << fits.log;

  const int64_t free = peak / 2;
  const Checked refused = Check(spec, free);
  ASSERT_EQ(refused.status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.status.message(), "data.max_seq_len: " + DoesNotFitMessage(job, free));
  EXPECT_NE(
      refused.status.message().find("is " + std::to_string(LargestFittingSeqLen(job, free)) + ". "),
      std::string::npos);

  // Not even 1024 tokens: the model is the trouble.
  EXPECT_EQ(Check(spec, 1 << 20).status.message().rfind("model.path: ", 0), 0u);

  spec.resources.ignore_memory_estimate = true;
  const Checked ignored = Check(spec, free);
  EXPECT_TRUE(ignored.status.ok());
  EXPECT_NE(ignored.log.find("running anyway (resources.ignore_memory_estimate)"),
            std::string::npos)
      << ignored.log;
}

Checked CheckHost(const JobSpec& spec, bool on_gpu, std::optional<int64_t> available,
                  bool keep_attention = false) {
  std::ostringstream out, err;
  EventSink events(/*json=*/false, out, err);
  MemoryJob job = MemoryJobOfRun(spec, TinyLlamaConfig(), 1, parallel::Strategy::kSingle);
  job.checkpointing = job.offload = true;
  job.keep_attention = keep_attention;
  return {CheckHostMemory(spec, job, on_gpu, available, events), err.str()};
}

TEST(MemoryCheckTest, RefusesAnOffloadThatTheHostCannotPin) {
  JobSpec spec;
  spec.data.max_seq_len = 1 << 20;
  MemoryJob job = MemoryJobOfRun(spec, TinyLlamaConfig(), 1, parallel::Strategy::kSingle);
  job.checkpointing = job.offload = true;
  const int64_t pinned = OffloadHostBytes(job);
  ASSERT_GT(pinned, 0);

  // A CPU, or a host whose memory is unknown: nothing to check.
  EXPECT_TRUE(CheckHost(spec, /*on_gpu=*/false, pinned / 10).status.ok());
  EXPECT_TRUE(CheckHost(spec, /*on_gpu=*/true, std::nullopt).status.ok());

  const Checked fits = CheckHost(spec, true, pinned * 10 / 9 + 1024);
  EXPECT_TRUE(fits.status.ok()) << fits.status.ToString();
  EXPECT_NE(fits.log.find("activation offload pins " + FormatMemory(pinned)), std::string::npos)
      << fits.log;
  EXPECT_EQ(fits.log.find("attention outputs"), std::string::npos) << fits.log;
  // Kept attention outputs are pinned too, and the log says so.
  job.keep_attention = true;
  const int64_t with_attention = OffloadHostBytes(job);
  ASSERT_GT(with_attention, pinned);
  const Checked kept = CheckHost(spec, true, with_attention * 10 / 9 + 1024, true);
  EXPECT_TRUE(kept.status.ok()) << kept.status.ToString();
  EXPECT_NE(kept.log.find("activation offload pins " + FormatMemory(with_attention) +
                          " of host memory (the inputs of "),
            std::string::npos)
      << kept.log;
  EXPECT_NE(kept.log.find(" tokens, with their attention outputs)"), std::string::npos) << kept.log;
  job.keep_attention = false;

  const int64_t available = pinned / 2;
  const Checked refused = CheckHost(spec, true, available);
  ASSERT_EQ(refused.status.code(), StatusCode::kInvalidArgument);
  const std::string message(refused.status.message());
  EXPECT_EQ(message.rfind("data.max_seq_len: activation offload pins ", 0), 0u) << message;
  const int64_t longest = LargestOffloadSeqLen(job, available);
  EXPECT_GT(longest, 0);
  EXPECT_NE(message.find("the longest context whose inputs fit is " + std::to_string(longest)),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("train.activation_offload: false"), std::string::npos) << message;

  // resources.ignore_memory_estimate waives the 10% margin, not the memory itself.
  spec.resources.ignore_memory_estimate = true;
  const Checked ignored = CheckHost(spec, true, pinned * 20 / 19);
  EXPECT_TRUE(ignored.status.ok()) << ignored.status.ToString();
  EXPECT_NE(ignored.log.find("running anyway"), std::string::npos) << ignored.log;
  EXPECT_EQ(CheckHost(spec, true, available).status.code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qlorad::trainer
