#include "common/memory_estimate.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "common/memory_refusal.h"

namespace qlorad {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

// Llama-3.2-1B and Llama-3.1-8B as their config.json files give them.
ModelShape Llama1B() {
  return {.hidden_size = 2048,
          .intermediate_size = 8192,
          .num_hidden_layers = 16,
          .num_attention_heads = 32,
          .num_key_value_heads = 8,
          .head_dim = 64,
          .vocab_size = 128256,
          .tie_word_embeddings = true};
}
ModelShape Llama8B() {
  return {.hidden_size = 4096,
          .intermediate_size = 14336,
          .num_hidden_layers = 32,
          .num_attention_heads = 32,
          .num_key_value_heads = 8,
          .head_dim = 128,
          .vocab_size = 128256,
          .tie_word_embeddings = false};
}

MemoryJob Job(ModelShape model, int64_t rows, int64_t seq, bool checkpointing, bool offload) {
  MemoryJob job;
  job.model = model;
  job.micro_batch_size = rows;
  job.seq_len = seq;
  job.checkpointing = checkpointing;
  job.offload = offload;
  return job;
}

double GiBOf(int64_t bytes) {
  return static_cast<double>(bytes) / kGiB;
}

TEST(MemoryEstimate, TermsAddUpToThePeak) {
  for (bool checkpointing : {false, true}) {
    const MemoryEstimate e = EstimateMemory(Job(Llama8B(), 1, 4096, checkpointing, false));
    EXPECT_EQ(e.peak, e.frozen_weights + e.lora_state + e.kept_activations + e.layer_working_set +
                          e.loss + e.workspace);
  }
}

// The trainable parameters of r = 16 on all seven projections, as the trainer and PEFT count
// them (bench/results/2026-12-06-h100-bdd46c0-e2e_bench-8b.json: trainable_params).
TEST(MemoryEstimate, LoraParametersMatchTheCountOfTheRealModels) {
  EXPECT_EQ(EstimateMemory(Job(Llama1B(), 4, 2048, true, false)).lora_parameters, 11272192);
  EXPECT_EQ(EstimateMemory(Job(Llama8B(), 1, 2048, true, false)).lora_parameters, 41943040);
}

// Measured peaks (torch max_memory_allocated) on an H100, NF4 + double quantization, LoRA r=16 on
// all seven projections, bf16, AdamW: bench/results/2026-12-06-h100-*-e2e_bench-*.json. The
// estimate must stay within 10% of each (common/README.md has the table).
TEST(MemoryEstimate, WithinTenPercentOfTheMeasuredPeaks) {
  struct Measured {
    ModelShape model;
    int64_t rows, seq;
    bool checkpointing, offload;
    double peak_gib;
    int64_t mlp_chunk_max_rows = 8192;  // the runs before 9fca4e2: one chunk at these shapes
  };
  const Measured runs[] = {
      {Llama1B(), 4, 2048, false, false, 8.973},       // a47ab63
      {Llama1B(), 4, 2048, true, false, 2.760},        // 609ecbe
      {Llama1B(), 4, 2048, true, false, 2.270, 2048},  // 9fca4e2, QLORAD_MLP_CHUNK_MIB=64
      {Llama1B(), 4, 2048, true, true, 2.359},         // 609ecbe
      {Llama8B(), 1, 2048, false, false, 12.867},      // bdd46c0
      {Llama8B(), 1, 2048, true, false, 6.823},        // bdd46c0
  };
  for (const Measured& m : runs) {
    MemoryJob job = Job(m.model, m.rows, m.seq, m.checkpointing, m.offload);
    job.mlp_chunk_max_rows = m.mlp_chunk_max_rows;
    const double estimate = GiBOf(EstimateMemory(job).peak);
    EXPECT_NEAR(estimate / m.peak_gib, 1.0, 0.10)
        << "layers " << m.model.num_hidden_layers << ", " << m.rows << " x " << m.seq
        << ", checkpointing " << m.checkpointing << ", offload " << m.offload << ", chunks of "
        << m.mlp_chunk_max_rows << " rows at most: estimate " << estimate << " GiB, measured "
        << m.peak_gib;
  }
}

TEST(MemoryEstimate, GrowsWithContextAndBatch) {
  for (bool checkpointing : {false, true}) {
    int64_t previous = 0;
    for (int64_t seq = 1024; seq <= 512 * 1024; seq += 7 * 1024) {
      const int64_t peak = EstimateMemory(Job(Llama8B(), 1, seq, checkpointing, false)).peak;
      EXPECT_GT(peak, previous) << "seq " << seq;
      previous = peak;
    }
    previous = 0;
    for (int64_t rows = 1; rows <= 16; ++rows) {
      const int64_t peak = EstimateMemory(Job(Llama1B(), rows, 2048, checkpointing, false)).peak;
      EXPECT_GT(peak, previous) << "rows " << rows;
      previous = peak;
    }
  }
}

TEST(MemoryEstimate, CheckpointingAndOffloadEachLowerThePeak) {
  for (int64_t seq : {2048, 32768, 131072}) {
    const int64_t off = EstimateMemory(Job(Llama8B(), 1, seq, false, false)).peak;
    const int64_t on = EstimateMemory(Job(Llama8B(), 1, seq, true, false)).peak;
    const int64_t offloaded = EstimateMemory(Job(Llama8B(), 1, seq, true, true)).peak;
    EXPECT_LT(on, off) << seq;
    EXPECT_LT(offloaded, on) << seq;
  }
}

TEST(MemoryEstimate, FsdpShardsTheFrozenWeightsAndTheLoraState) {
  MemoryJob single = Job(Llama8B(), 1, 2048, true, false);
  MemoryJob sharded = single;
  sharded.world_size = 4;
  sharded.sharding = MemorySharding::kFsdp;
  const MemoryEstimate a = EstimateMemory(single), b = EstimateMemory(sharded);
  EXPECT_LT(b.frozen_weights, a.frozen_weights);
  EXPECT_LT(b.lora_state, a.lora_state);
  EXPECT_EQ(b.kept_activations, a.kept_activations);  // each rank runs its own micro-batch
}

TEST(MemoryEstimate, LargestFittingSeqLenIsTheLastMultipleOf1024ThatFits) {
  for (bool offload : {false, true}) {
    const MemoryJob job = Job(Llama8B(), 1, 131072, true, offload);
    for (int64_t free : {8 * kGiB, 24 * kGiB, 79 * kGiB}) {
      const int64_t longest = LargestFittingSeqLen(job, free);
      ASSERT_GT(longest, 0) << free;
      EXPECT_EQ(longest % 1024, 0);
      MemoryJob at = job;
      at.seq_len = longest;
      EXPECT_TRUE(Fits(at, free)) << longest;
      at.seq_len = longest + 1024;
      EXPECT_FALSE(Fits(at, free)) << longest;
    }
  }
  // The frozen 8B model alone (5.3 GiB) does not fit in 4 GiB.
  EXPECT_EQ(LargestFittingSeqLen(Job(Llama8B(), 1, 2048, true, true), 4 * kGiB), 0);
}

TEST(MemoryEstimate, ChangesThatFitDoFitAndTheMessageNamesThem) {
  const MemoryJob job = Job(Llama8B(), 4, 16384, false, false);
  const int64_t free = 40 * kGiB;
  ASSERT_FALSE(Fits(job, free));
  const std::vector<std::string> changes = ChangesThatFit(job, free);
  ASSERT_FALSE(changes.empty());
  EXPECT_EQ(changes[0].rfind("train.activation_checkpointing: true (about ", 0), 0) << changes[0];
  MemoryJob on = job;
  on.checkpointing = true;
  EXPECT_TRUE(Fits(on, free));

  const std::string message = DoesNotFitMessage(job, free);
  EXPECT_NE(
      message.find("the memory estimate of this job is " + FormatMemory(EstimateMemory(job).peak)),
      std::string::npos)
      << message;
  EXPECT_NE(message.find("of the 40.0 GiB free"), std::string::npos) << message;
  EXPECT_NE(message.find("The largest data.max_seq_len that fits with these options "
                         "(activation checkpointing off, micro_batch_size 4) is " +
                         std::to_string(LargestFittingSeqLen(job, free))),
            std::string::npos)
      << message;
  EXPECT_NE(message.find(changes[0]), std::string::npos) << message;
  EXPECT_NE(message.find("resources.ignore_memory_estimate: true"), std::string::npos);
}

// The coordinator reads a trainer's refusal back (memory_refusal.h): the peak it names, never
// less than the estimate the message was written from.
TEST(MemoryEstimate, TheRefusalsPeakReadsBackRoundedUp) {
  for (const int64_t seq_len : {2048, 65536, 131072}) {
    const MemoryJob job = Job(Llama8B(), 1, seq_len, true, false);
    const int64_t peak = EstimateMemory(job).peak;
    // As the trainer's error carries it (memory_check.h): the field, then the refusal.
    const std::string error = "data.max_seq_len: " + DoesNotFitMessage(job, 4 * kGiB);
    const std::optional<int64_t> read = PeakOfRefusal(error);
    ASSERT_TRUE(read.has_value()) << error;
    EXPECT_GE(*read, peak) << error;
    EXPECT_LE(*read, peak + kGiB / 10) << error;  // FormatMemory keeps a tenth of a GiB
  }
  // Below 1 GiB FormatMemory writes whole MiB.
  EXPECT_EQ(PeakOfRefusal("model.path: the memory estimate of this job is 310 MiB at its peak"),
            int64_t{310} * (1 << 20) + (1 << 19));
  EXPECT_FALSE(PeakOfRefusal("data.path: data/train.jsonl: cannot open").has_value());
  EXPECT_FALSE(PeakOfRefusal("memory estimate: 13.9 GiB at the peak").has_value());
  EXPECT_FALSE(PeakOfRefusal("the memory estimate of this job is lots at its peak").has_value());
  EXPECT_FALSE(PeakOfRefusal("the memory estimate of this job is 3.0 TiB at its peak").has_value());
}

TEST(MemoryEstimate, AutoTurnsCheckpointingAndOffloadOnOnlyWhenNeeded) {
  JobSpec spec;  // both auto
  spec.train.micro_batch_size = 1;
  spec.data.max_seq_len = 65536;
  const MemoryJob job = MemoryJobOf(spec, Llama8B());
  const auto peak = [&](bool checkpointing, bool offload) {
    return EstimateMemory(Job(Llama8B(), 1, 65536, checkpointing, offload)).peak;
  };
  // Room for the step without recompute: off.
  ActivationChoices c = ResolveActivations(spec, job, peak(false, false) * 10 / 9 + 1024);
  EXPECT_FALSE(c.checkpointing);
  EXPECT_FALSE(c.offload);
  // Room only with recompute: checkpointing on, offload off.
  c = ResolveActivations(spec, job, peak(true, false) * 10 / 9 + 1024);
  EXPECT_TRUE(c.checkpointing);
  EXPECT_FALSE(c.offload);
  EXPECT_NE(c.checkpointing_why.find("auto: the memory estimate of a step without it is"),
            std::string::npos);
  // Less: both on.
  c = ResolveActivations(spec, job, peak(true, true) * 10 / 9 + 1024);
  EXPECT_TRUE(c.checkpointing);
  EXPECT_TRUE(c.offload);
  // A CPU: auto means off.
  c = ResolveActivations(spec, job, std::nullopt);
  EXPECT_FALSE(c.checkpointing);
  EXPECT_EQ(c.checkpointing_why, "auto: on a CPU");
  // Explicit choices stand whatever the memory.
  spec.train.activation_checkpointing = CheckpointingChoice::kOff;
  spec.train.activation_offload = CheckpointingChoice::kOff;
  c = ResolveActivations(spec, job, 1 * kGiB);
  EXPECT_FALSE(c.checkpointing);
  EXPECT_FALSE(c.offload);
}

TEST(MemoryEstimate, MemoryJobOfTakesAutoAsTheLeanestChoice) {
  JobSpec spec;
  MemoryJob job = MemoryJobOf(spec, Llama1B());
  EXPECT_TRUE(job.checkpointing);
  EXPECT_TRUE(job.offload);
  spec.train.activation_checkpointing = CheckpointingChoice::kOff;
  job = MemoryJobOf(spec, Llama1B());
  EXPECT_FALSE(job.checkpointing);
  EXPECT_FALSE(job.offload);
  spec.resources.gpus = 2;
  EXPECT_EQ(MemoryJobOf(spec, Llama1B()).sharding, MemorySharding::kFsdp);
}

TEST(MemoryEstimate, DeviceBytesNeededAddsTheContextAndTheAllocatorsShare) {
  EXPECT_EQ(DeviceBytesNeeded(9 * kGiB), kCudaContextBytes + 10 * kGiB);
  EXPECT_EQ(UsableBytes(10 * kGiB), 9 * kGiB);
}

TEST(MemoryEstimate, FormatMemorySaysMiBBelowAGiB) {
  EXPECT_EQ(FormatMemory(310 * (int64_t{1} << 20)), "310 MiB");
  EXPECT_EQ(FormatMemory(kGiB), "1.0 GiB");
  EXPECT_EQ(FormatMemory(kGiB * 234 / 10), "23.4 GiB");
}

TEST(ModelShape, ReadsTheSizesWithTheTrainersDefaults) {
  auto shape = ParseModelShape(
      R"({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "vocab_size": 512})",
      "x/config.json");
  ASSERT_TRUE(shape.ok()) << shape.status().ToString();
  EXPECT_EQ(shape->num_key_value_heads, 4);
  EXPECT_EQ(shape->head_dim, 16);
  EXPECT_FALSE(shape->tie_word_embeddings);
  EXPECT_EQ(ParseModelShape(R"({"hidden_size": 64})", "x/config.json").status().message(),
            "x/config.json: intermediate_size: missing");
  EXPECT_EQ(ParseModelShape("[1", "x/config.json")
                .status()
                .message()
                .rfind("x/config.json: not valid JSON", 0),
            0u);
  EXPECT_EQ(ReadModelShape("/nonexistent-dir").status().code(), StatusCode::kNotFound);
}

// Offload pins every layer's input on the host: 8B at 352K tokens (360448) is 32 x 2.75 GiB.
TEST(MemoryEstimate, OffloadPinsEveryLayersInputOnTheHost) {
  const MemoryJob job = Job(Llama8B(), 1, 360448, true, true);
  const int64_t input = int64_t{360448} * 4096 * 2;
  EXPECT_EQ(OffloadHostBytes(job), 32 * (input + (int64_t{1} << 20)));
  EXPECT_EQ(OffloadHostBytes(Job(Llama8B(), 1, 360448, true, false)), 0);
  EXPECT_EQ(OffloadHostBytes(Job(Llama8B(), 1, 360448, false, true)), 0);  // nothing kept

  // A 128 GiB host with 120 GiB available: 108 GiB usable, so 352K's 88 GiB fits; with 60 GiB
  // available the longest context is the one whose inputs fit in 54 GiB.
  EXPECT_GE(LargestOffloadSeqLen(job, 120 * kGiB), 360448);
  const int64_t longest = LargestOffloadSeqLen(job, 60 * kGiB);
  EXPECT_EQ(longest % 1024, 0);
  EXPECT_LE(OffloadHostBytes(Job(Llama8B(), 1, longest, true, true)), UsableHostBytes(60 * kGiB));
  EXPECT_GT(OffloadHostBytes(Job(Llama8B(), 1, longest + 1024, true, true)),
            UsableHostBytes(60 * kGiB));
  EXPECT_EQ(LargestOffloadSeqLen(job, 32 << 20), 0);  // not even 1024 tokens
}

// Keeping attention's output and log-sum-exp for the recompute: 32 heads x (128 x 2 + 4) bytes a
// token per layer beside the input's 4096 x 2, on the host with offload; on only where both the
// device and the host have room.
TEST(MemoryEstimate, KeptAttentionCostsHostMemoryAndIsKeptOnlyWhereItFits) {
  MemoryJob job = Job(Llama8B(), 1, 32768, true, true);
  const int64_t inputs = OffloadHostBytes(job);
  job.keep_attention = true;
  EXPECT_EQ(OffloadHostBytes(job) - inputs, 32 * (int64_t{32768} * 32 * (128 * 2 + 4) + (2 << 20)));
  // On the device: the few layers offload has in flight hold their attention outputs too.
  EXPECT_GT(EstimateMemory(job).peak, EstimateMemory(Job(Llama8B(), 1, 32768, true, true)).peak);

  job.keep_attention = false;
  const KeepChoice on = ResolveKeepAttention(job, 79 * kGiB, 120 * kGiB);
  EXPECT_TRUE(on.on) << on.why;
  EXPECT_NE(on.why.find("offload pins 16."), std::string::npos) << on.why;
  // 352K tokens: the inputs' 88 GiB fit a 120 GiB host, twice that does not.
  const KeepChoice host_full =
      ResolveKeepAttention(Job(Llama8B(), 1, 360448, true, true), 79 * kGiB, 120 * kGiB);
  EXPECT_FALSE(host_full.on);
  EXPECT_NE(host_full.why.find("of host memory, 108.0 GiB usable"), std::string::npos)
      << host_full.why;
  const KeepChoice device_full = ResolveKeepAttention(job, 10 * kGiB, 120 * kGiB);
  EXPECT_FALSE(device_full.on);
  EXPECT_NE(device_full.why.find("usable on the device"), std::string::npos) << device_full.why;
  EXPECT_FALSE(ResolveKeepAttention(job, 79 * kGiB, std::nullopt).on);  // the host unknown
  EXPECT_EQ(ResolveKeepAttention(job, std::nullopt, 120 * kGiB).why, "on a CPU");
  EXPECT_EQ(ResolveKeepAttention(Job(Llama8B(), 1, 32768, true, false), 79 * kGiB, 120 * kGiB).why,
            "activation offload is off");
}

// The MLP's gate|up kept too: 2 x 14336 x 2 bytes a token per layer (1.75 GiB a layer at 32K) on
// the host beside the inputs and attention outputs, and two layers' worth more on the device (the
// one in use and the next one fetched ahead).
TEST(MemoryEstimate, KeptGateUpCostsHostMemoryAndIsKeptOnlyWhereItFits) {
  MemoryJob job = Job(Llama8B(), 1, 32768, true, true);
  job.keep_attention = true;
  const int64_t before = OffloadHostBytes(job);
  const MemoryEstimate estimate_before = EstimateMemory(job);
  const KeepChoice on = ResolveKeepMlp(job, 79 * kGiB, 120 * kGiB);
  EXPECT_TRUE(on.on) << on.why;
  job.keep_mlp = true;
  EXPECT_EQ(OffloadHostBytes(job) - before, 32 * (int64_t{32768} * 2 * 14336 * 2 + (1 << 20)));
  const MemoryEstimate estimate = EstimateMemory(job);
  EXPECT_GT(estimate.peak, estimate_before.peak);
  EXPECT_EQ(estimate.kept_activations - estimate_before.kept_activations,
            2 * int64_t{32768} * 2 * 14336 * 2);
  job.keep_mlp = false;
  // 128K: the inputs, attention outputs and gate|up would take 288 GiB of a 120 GiB host.
  MemoryJob long_job = Job(Llama8B(), 1, 131072, true, true);
  long_job.keep_attention = true;
  const KeepChoice host_full = ResolveKeepMlp(long_job, 79 * kGiB, 120 * kGiB);
  EXPECT_FALSE(host_full.on);
  EXPECT_NE(host_full.why.find("of host memory, 108.0 GiB usable"), std::string::npos)
      << host_full.why;
}

}  // namespace
}  // namespace qlorad
