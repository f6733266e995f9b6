#include "common/memory_estimate.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "common/memory_refusal.h"

namespace qlorad {
namespace {

// What attention keeps for a checkpointed layer's recompute, per token (keep_attention): its
// output [tokens, heads * head_dim] in the activations' dtype and its fp32 log-sum-exp
// [heads, tokens].
int64_t KeptAttentionPerToken(const MemoryJob& job) {
  const ModelShape& m = job.model;
  return m.num_attention_heads * (m.head_dim * job.activation_bytes + 4);
}

constexpr int64_t kMiB = int64_t{1} << 20;

int64_t CeilDiv(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

struct Projection {
  const char* name;
  int64_t out, in;
};

// A decoder layer's seven projections, [out, in] as Hugging Face stores them.
std::vector<Projection> LayerProjections(const ModelShape& m) {
  const int64_t h = m.hidden_size, i = m.intermediate_size;
  const int64_t q = m.num_attention_heads * m.head_dim, kv = m.num_key_value_heads * m.head_dim;
  return {{"q_proj", q, h},    {"k_proj", kv, h}, {"v_proj", kv, h},  {"o_proj", h, q},
          {"gate_proj", i, h}, {"up_proj", i, h}, {"down_proj", h, i}};
}

bool Targets(const MemoryJob& job, const std::string& name) {
  return std::find(job.lora_targets.begin(), job.lora_targets.end(), name) !=
         job.lora_targets.end();
}

// A frozen projection as the trainer holds it. NF4 (kernels/nf4_ref.h, bitsandbytes' layout):
// two 4-bit codes per byte, and per block of block_size values one absmax, which double
// quantization stores as a uint8 code plus, per 256 blocks, one fp32 absmax, with the 256-entry
// fp32 code table and one fp32 offset; without it the absmax values are fp32. Unquantized: the
// weight in the activations' dtype.
int64_t FrozenProjectionBytes(int64_t numel, const MemoryJob& job) {
  if (!job.nf4) return numel * job.activation_bytes;
  const int64_t blocks = CeilDiv(numel, job.block_size);
  const int64_t packed = CeilDiv(numel, 2);
  if (!job.double_quant) return packed + blocks * 4;
  return packed + blocks + CeilDiv(blocks, 256) * 4 + 256 * 4 + 4;
}

int64_t LayerFrozenBytes(const MemoryJob& job) {
  int64_t bytes = 0;
  for (const Projection& p : LayerProjections(job.model)) {
    bytes += FrozenProjectionBytes(p.out * p.in, job);
  }
  return bytes;
}

// LoRA A [r, in] and B [out, r] of each targeted projection of one layer.
int64_t LayerLoraParameters(const MemoryJob& job) {
  int64_t n = 0;
  for (const Projection& p : LayerProjections(job.model)) {
    if (Targets(job, p.name)) n += job.lora_r * (p.in + p.out);
  }
  return n;
}

int64_t HeadLoraParameters(const MemoryJob& job) {
  const ModelShape& m = job.model;
  return Targets(job, "lm_head") ? job.lora_r * (m.hidden_size + m.vocab_size) : 0;
}

// Sums of the widths that recur below, per token.
struct Widths {
  int64_t h, i, q, kv, qkv, heads;
  int64_t lora_xa;  // x·A of every targeted projection, [tokens, r] each
};

Widths WidthsOf(const MemoryJob& job) {
  const ModelShape& m = job.model;
  Widths w{};
  w.h = m.hidden_size;
  w.i = m.intermediate_size;
  w.q = m.num_attention_heads * m.head_dim;
  w.kv = m.num_key_value_heads * m.head_dim;
  w.qkv = w.q + 2 * w.kv;
  w.heads = m.num_attention_heads;
  for (const Projection& p : LayerProjections(m)) {
    if (Targets(job, p.name)) w.lora_xa += job.lora_r;
  }
  return w;
}

// Row statistics kept in fp32 per token: flash attention's logsumexp (one per head) and the two
// RMSNorms' inverse RMS.
int64_t RowStatsBytes(const Widths& w) {
  return 4 * w.heads + 2 * 4;
}

// Bytes per token a layer keeps from forward to backward without recompute (the fused path):
// its input x (the first norm's backward), the normed input of q|k|v, q|k|v after rotary
// (flash attention's backward), the attention output (flash attention's and o_proj's), the
// residual sum after attention (the add + norm's backward), the MLP's input, and gate|up [2I]
// (SwiGLU + down's backward recomputes SwiGLU from it); plus x·A of each adapter and the row
// statistics. With fp32 LoRA compute on bf16 activations, each projection group also keeps its
// input upcast to fp32 (PEFT's way): q|k|v's and gate|up's [h], o's [q] and down's [I].
int64_t KeptPerTokenWithoutRecompute(const MemoryJob& job, const Widths& w) {
  const int64_t b = job.activation_bytes;
  int64_t bytes =
      (4 * w.h + w.q + w.qkv + 2 * w.i) * b + RowStatsBytes(w) + w.lora_xa * job.lora_compute_bytes;
  if (job.lora_compute_bytes > b) bytes += (2 * w.h + w.q + w.i) * job.lora_compute_bytes;
  return bytes;
}

// The public rule for this job's model and precision.
int64_t ChunkRowsOf(const MemoryJob& job, int64_t tokens) {
  return MlpChunkRows(job.model.intermediate_size, job.activation_bytes, tokens,
                      job.mlp_chunk_max_rows);
}

// One decoder layer's backward on top of what the step keeps: the larger of its MLP part and its
// attention part, each counting the tensors alive at its busiest moment.
int64_t LayerWorkingSet(const MemoryJob& job, const Widths& w, int64_t tokens) {
  const int64_t b = job.activation_bytes;
  const int64_t dy = tokens * w.h * b;  // the gradient arriving from the layer above
  const bool recompute = job.checkpointing;
  // Under recompute the layer's forward runs again with its graph first (graph_only_forward.h),
  // holding the normed input of q|k|v, q|k|v, the attention output, the layer's output (what the
  // recompute backpropagates from) and the row statistics for the whole layer; while the MLP
  // runs backward also the residual sum and the MLP's input (ChunkedMlp keeps only that; the
  // MLP's own output is never computed in a recompute).
  const int64_t rerun_attention =
      recompute ? tokens * ((2 * w.h + w.q + w.qkv) * b + RowStatsBytes(w)) : 0;
  const int64_t rerun_mlp = recompute ? rerun_attention + tokens * 2 * w.h * b : 0;

  // MLP backward. With recompute: ChunkedMlp, per chunk of n rows gate|up [2I], SwiGLU's output
  // [I], its gradient [I], gate|up's gradient [2I] and the chunk's input gradient [h], with
  // gate|up's weight dequantized for its backward GEMM [2I, h] (several chunks: gate|up's and
  // down's weights dequantized once for all chunks [3I, h], and the whole input gradient [T, h]).
  // Without recompute the kept gate|up is the input: SwiGLU's output and gradient, gate|up's
  // gradient and the input gradient, for every row at once.
  int64_t mlp;
  if (recompute) {
    const int64_t rows = std::min(tokens, ChunkRowsOf(job, tokens));
    const bool chunked = tokens > rows;
    const int64_t weights = chunked ? 3 * w.i * w.h * b : (job.nf4 ? 2 * w.i * w.h * b : 0);
    // A kept gate|up (keep_mlp) is read in place: the chunk computes none.
    const int64_t per_row = (job.keep_mlp ? 4 : 6) * w.i + w.h;
    mlp = rerun_mlp + dy + rows * per_row * b + weights + (chunked ? dy : 0);
  } else {
    mlp = dy + tokens * (4 * w.i + w.h) * b + (job.nf4 ? 2 * w.i * w.h * b : 0);
  }

  // Attention backward, inside LibTorch's flash attention backward: the gradients of the
  // residual stream [h] and of the attention output [q], dq [q], dk and dv per query head when
  // the kv heads are fewer [2q] and then summed [2 kv], the fp32 dq accumulator [q] and fp32
  // per-head row sums. (Joining dq, dk, dv into q|k|v's gradient afterwards needs less: the
  // kernel's temporaries are gone by then.)
  const int64_t per_head_dkv = w.kv < w.q ? 2 * w.q : 0;
  const int64_t attention = rerun_attention + dy +
                            tokens * (w.h + w.q + w.q + per_head_dkv + 2 * w.kv) * b +
                            tokens * (4 * w.q + 4 * w.heads);
  return std::max(mlp, attention);
}

// What the loss head holds at the end of forward: the last layer's output (the final norm's
// backward), the normed hidden states, their gradient (the fused loss computes it in forward),
// fp32 losses and log-sum-exp per token, and the loss's scratch: the online cross-entropy
// (kernels/torch/ce_online_ops.h) sizes its tiles within a fifth of the hidden states, but never
// below a tile of min(2048, tokens) x min(16384, V) (activation dtype) with its fp32 [rows, h]
// accumulator; the
// generic path (a LoRA'd head) holds a chunk of fp32 logits and their gradient, 256 MiB each
// at most (train.loss_chunk_size auto).
int64_t LossBytes(const MemoryJob& job, const Widths& w, int64_t tokens) {
  const int64_t hidden = tokens * w.h * job.activation_bytes;
  const int64_t online_floor =
      std::min<int64_t>(2048, tokens) *
      (std::min<int64_t>(16384, job.model.vocab_size) * job.activation_bytes + w.h * 4);
  const int64_t scratch = Targets(job, "lm_head")
                              ? 2 * std::min(tokens * job.model.vocab_size * 4, 256 * kMiB)
                              : std::max(hidden / 5, online_floor);
  return 3 * hidden + tokens * 8 + scratch;
}

MemoryJob WithSeqLen(MemoryJob job, int64_t seq_len) {
  job.seq_len = seq_len;
  return job;
}

}  // namespace

std::string FormatMemory(int64_t bytes) {
  char text[32];
  if (bytes < (int64_t{1} << 30)) {
    std::snprintf(text, sizeof(text), "%.0f MiB", static_cast<double>(bytes) / (int64_t{1} << 20));
  } else {
    std::snprintf(text, sizeof(text), "%.1f GiB", static_cast<double>(bytes) / (int64_t{1} << 30));
  }
  return text;
}

int64_t MlpChunkMaxRows() {
  static const int64_t rows = [] {
    const char* asked = std::getenv("QLORAD_MLP_CHUNK_ROWS");
    const int64_t value = asked != nullptr ? std::atoll(asked) : 0;
    return value > 0 ? value : 4096;
  }();
  return rows;
}

int64_t MlpChunkRows(int64_t intermediate, int64_t activation_bytes, int64_t tokens,
                     int64_t max_rows) {
  constexpr int64_t kTile = 128;
  const int64_t row_bytes = std::max<int64_t>(1, 2 * intermediate * activation_bytes);
  const int64_t most = std::min(max_rows, std::max<int64_t>(1024, (256 * kMiB) / row_bytes));
  const int64_t chunks = CeilDiv(std::max<int64_t>(1, tokens), most);
  return CeilDiv(CeilDiv(std::max<int64_t>(1, tokens), chunks), kTile) * kTile;
}

MemoryEstimate EstimateMemory(const MemoryJob& job) {
  const ModelShape& m = job.model;
  const Widths w = WidthsOf(job);
  const int64_t b = job.activation_bytes;
  const int64_t layers = m.num_hidden_layers;
  const int64_t tokens = job.micro_batch_size * job.seq_len;
  const bool fsdp = job.sharding == MemorySharding::kFsdp && job.world_size > 1;
  MemoryEstimate e;

  // Frozen weights: the embedding and, untied, the head in the activations' dtype (never
  // quantized), the 2L + 1 RMSNorm weights, and the decoder's projections. Under fsdp each rank
  // holds 1/world of the projections (none with cpu_offload: they wait in host memory) plus the
  // layers gathered for use: the current one and the next one prefetched, or every layer from
  // forward to backward with reshard_after_forward false.
  const int64_t embedding = m.vocab_size * m.hidden_size * b;
  const int64_t head = m.tie_word_embeddings ? 0 : embedding;
  const int64_t norms = (2 * layers + 1) * m.hidden_size * b;
  const int64_t layer_frozen = LayerFrozenBytes(job);
  int64_t decoder = layers * layer_frozen;
  if (fsdp) {
    const int64_t gathered = (job.reshard_after_forward ? std::min<int64_t>(2, layers) : layers);
    decoder = (job.cpu_offload ? 0 : CeilDiv(decoder, job.world_size)) + gathered * layer_frozen;
  }
  e.frozen_weights = embedding + head + norms + decoder;

  // LoRA: fp32 A and B, AdamW's fp32 exp_avg and exp_avg_sq from the first step on (12 bytes per
  // parameter), and fp32 gradients, which exist only from a layer's backward to the optimizer
  // step (zero_grad frees them): counted below as far as backward has gone at the peak. Under
  // fsdp a rank holds its shard (nothing with cpu_offload) and the gathered layers' A and B in
  // the compute dtype.
  const int64_t layer_lora = LayerLoraParameters(job);
  const int64_t head_lora = HeadLoraParameters(job);
  e.lora_parameters = layers * layer_lora + head_lora;
  int64_t rank_lora = e.lora_parameters;
  int64_t gathered_lora = 0;
  if (fsdp) {
    rank_lora = job.cpu_offload ? 0 : CeilDiv(layers * layer_lora, job.world_size) + head_lora;
    gathered_lora = std::min<int64_t>(2, layers) * layer_lora * job.lora_compute_bytes;
  }
  const int64_t lora_fixed = 12 * rank_lora + gathered_lora;
  const int64_t layer_grads =
      fsdp ? (job.cpu_offload ? 0 : CeilDiv(4 * layer_lora, job.world_size)) : 4 * layer_lora;

  // Kept activations per layer: with recompute, the layer's input only [T, h]
  // (activation_recompute.h); without, everything its backward reads
  // (KeptPerTokenWithoutRecompute) and the adapters' A and B cast to the compute dtype.
  // Offloaded, the inputs wait in host memory and the GPU holds about three at a time: the one
  // being recomputed, the next one fetched ahead, and one whose device copy the allocator has
  // not taken back yet (the measured 1B run moved 12.8 of its 16 inputs off the GPU).
  // A kept gate|up (keep_mlp) is not taken before its layer's backward, where it is read in
  // place: offloaded, the GPU holds two at the peak, the one in use and the next one fetched
  // ahead (measured at 8B 32K: 3.42 GiB more than without, two of 1.75 GiB).
  const int64_t kept_per_layer =
      job.checkpointing
          ? tokens * (m.hidden_size * b + (job.keep_attention ? KeptAttentionPerToken(job) : 0))
          : tokens * KeptPerTokenWithoutRecompute(job, w) +
                (job.lora_compute_bytes == 4 ? 0 : layer_lora * job.lora_compute_bytes);
  const int64_t kept_mlp_per_layer =
      job.checkpointing && job.keep_mlp ? tokens * 2 * m.intermediate_size * b : 0;
  const bool offloaded = job.checkpointing && job.offload;
  const auto kept_bytes = [&](int64_t layers_left) {
    return (offloaded ? std::min<int64_t>(layers_left, 3) : layers_left) * kept_per_layer +
           (offloaded ? std::min<int64_t>(layers_left, 2) : layers_left) * kept_mlp_per_layer;
  };

  // The cuBLAS workspace (32 MiB on Hopper, from torch's allocator) and the step's tokens on the
  // device: ids, labels and positions, int64.
  e.workspace = 32 * kMiB + tokens * 8 * 3;

  // Backward, at each layer from the last one: the kept activations of the layers not yet
  // through backward, the gradients of those that are, and one layer's working set.
  const int64_t working = LayerWorkingSet(job, w, tokens);
  int64_t best = -1;
  for (int64_t done = 0; done < layers; ++done) {
    const int64_t kept = kept_bytes(layers - done);
    const int64_t grads = (done + 1) * layer_grads + (head_lora > 0 ? 4 * head_lora : 0);
    if (kept + grads <= best) continue;
    best = kept + grads;
    e.kept_activations = kept;
    e.lora_state = lora_fixed + grads;
  }
  e.layer_working_set = working;
  e.peak = e.frozen_weights + e.lora_state + e.kept_activations + e.layer_working_set + e.workspace;
  e.phase = "backward of a decoder layer";

  // The end of forward, at the loss: every kept activation and the loss head's tensors.
  const int64_t at_loss =
      e.frozen_weights + lora_fixed + kept_bytes(layers) + LossBytes(job, w, tokens) + e.workspace;
  if (at_loss > e.peak) {
    e.kept_activations = kept_bytes(layers);
    e.lora_state = lora_fixed;
    e.layer_working_set = 0;
    e.loss = LossBytes(job, w, tokens);
    e.peak = at_loss;
    e.phase = "the loss, at the end of forward";
  }
  // The optimizer step: every gradient (ddp also flattens them into one all-reduce buffer).
  const int64_t all_grads = layers * layer_grads + 4 * head_lora;
  const int64_t at_optimizer = e.frozen_weights + lora_fixed + all_grads +
                               (job.sharding == MemorySharding::kDdp ? all_grads : 0) + e.workspace;
  if (at_optimizer > e.peak) {
    e.kept_activations = e.layer_working_set = e.loss = 0;
    e.lora_state = at_optimizer - e.frozen_weights - e.workspace;
    e.peak = at_optimizer;
    e.phase = "the optimizer step";
  }
  return e;
}

MemoryJob MemoryJobOf(const JobSpec& spec, const ModelShape& model) {
  const auto bytes_of = [](Precision p) { return p == Precision::kFp32 ? 4 : 2; };
  MemoryJob job;
  job.model = model;
  job.micro_batch_size = spec.train.micro_batch_size;
  job.seq_len = spec.data.max_seq_len;
  job.activation_bytes = bytes_of(spec.train.precision);
  job.lora_compute_bytes = bytes_of(spec.lora.compute_precision.value_or(spec.train.precision));
  job.nf4 = spec.quantization.type == QuantizationType::kNf4;
  job.block_size = spec.quantization.block_size;
  job.double_quant = spec.quantization.double_quant;
  job.lora_r = spec.lora.r;
  job.lora_targets = spec.lora.target_modules;
  job.checkpointing = spec.train.activation_checkpointing != CheckpointingChoice::kOff;
  job.offload = spec.train.activation_offload == CheckpointingChoice::kOn ||
                (spec.train.activation_offload == CheckpointingChoice::kAuto && job.checkpointing);
  job.world_size = spec.resources.gpus;
  switch (spec.parallel.strategy) {
    case StrategyChoice::kAuto:
      job.sharding = job.world_size > 1 ? MemorySharding::kFsdp : MemorySharding::kSingle;
      break;
    case StrategyChoice::kSingle:
      job.sharding = MemorySharding::kSingle;
      break;
    case StrategyChoice::kDdp:
      job.sharding = MemorySharding::kDdp;
      break;
    case StrategyChoice::kFsdp:
      job.sharding = MemorySharding::kFsdp;
      break;
  }
  job.reshard_after_forward = spec.parallel.reshard_after_forward;
  job.cpu_offload = spec.parallel.cpu_offload;
  return job;
}

int64_t UsableBytes(int64_t free_bytes) {
  return free_bytes / 10 * 9;
}

int64_t DeviceBytesNeeded(int64_t peak) {
  return kCudaContextBytes + CeilDiv(peak * 10, 9);
}

bool Fits(const MemoryJob& job, int64_t free_bytes) {
  return EstimateMemory(job).peak <= UsableBytes(free_bytes);
}

ActivationChoices ResolveActivations(const JobSpec& spec, MemoryJob job,
                                     std::optional<int64_t> free_bytes) {
  const CheckpointingChoice checkpointing = spec.train.activation_checkpointing;
  const CheckpointingChoice offload = spec.train.activation_offload;
  const auto usable = [&] {
    return FormatMemory(UsableBytes(*free_bytes)) + " usable of " + FormatMemory(*free_bytes) +
           " free";
  };
  ActivationChoices c;
  if (checkpointing != CheckpointingChoice::kAuto) {
    c.checkpointing = checkpointing == CheckpointingChoice::kOn;
    c.checkpointing_why = "train.activation_checkpointing";
  } else if (!free_bytes) {
    c.checkpointing_why = "auto: on a CPU";
  } else {
    job.checkpointing = job.offload = false;
    const int64_t peak = EstimateMemory(job).peak;
    c.checkpointing = peak > UsableBytes(*free_bytes);
    c.checkpointing_why =
        "auto: the memory estimate of a step without it is " + FormatMemory(peak) + ", " + usable();
  }
  if (!c.checkpointing && offload == CheckpointingChoice::kOn) {
    c.checkpointing = true;
    c.checkpointing_why = "train.activation_offload: true offloads what it keeps";
  }
  if (offload != CheckpointingChoice::kAuto) {
    c.offload = offload == CheckpointingChoice::kOn;
    c.offload_why = "train.activation_offload";
  } else if (!c.checkpointing) {
    c.offload_why = "auto: checkpointing is off";
  } else if (!free_bytes) {
    c.offload_why = "auto: on a CPU";
  } else {
    job.checkpointing = true;
    job.offload = false;
    const int64_t peak = EstimateMemory(job).peak;
    c.offload = peak > UsableBytes(*free_bytes);
    c.offload_why = "auto: the memory estimate with the layers' inputs on the device is " +
                    FormatMemory(peak) + ", " + usable();
  }
  return c;
}

int64_t LargestFittingSeqLen(MemoryJob job, int64_t free_bytes) {
  constexpr int64_t kStep = 1024;
  if (!Fits(WithSeqLen(job, kStep), free_bytes)) return 0;
  // The estimate grows with the sequence: double until it stops fitting, then bisect. 16M tokens
  // bound the search (far past any model's context).
  int64_t fits = 1, too_long = 2;
  constexpr int64_t kMaxSteps = (int64_t{1} << 24) / kStep;
  while (too_long <= kMaxSteps && Fits(WithSeqLen(job, too_long * kStep), free_bytes)) {
    fits = too_long;
    too_long *= 2;
  }
  if (too_long > kMaxSteps) return fits * kStep;
  while (too_long - fits > 1) {
    const int64_t mid = fits + (too_long - fits) / 2;
    (Fits(WithSeqLen(job, mid * kStep), free_bytes) ? fits : too_long) = mid;
  }
  return fits * kStep;
}

int64_t OffloadHostBytes(const MemoryJob& job) {
  if (!job.offload || !job.checkpointing) return 0;
  const int64_t tokens = job.micro_batch_size * job.seq_len;
  constexpr int64_t kRounding = int64_t{1} << 20;
  int64_t layer = tokens * job.model.hidden_size * job.activation_bytes + kRounding;
  if (job.keep_attention) layer += tokens * KeptAttentionPerToken(job) + 2 * kRounding;
  if (job.keep_mlp) {
    layer += tokens * 2 * job.model.intermediate_size * job.activation_bytes + kRounding;
  }
  return job.model.num_hidden_layers * layer;
}

namespace {

// ResolveKeepAttention's and ResolveKeepMlp's rule for `with_it` (the job keeping the part asked
// about besides what it kept already).
KeepChoice ResolveKept(const MemoryJob& with_it, std::optional<int64_t> free_bytes,
                       std::optional<int64_t> host_available_bytes) {
  KeepChoice c;
  if (!with_it.checkpointing || !with_it.offload) {
    c.why = "activation offload is off";
    return c;
  }
  if (!free_bytes) {
    c.why = "on a CPU";
    return c;
  }
  const int64_t peak = EstimateMemory(with_it).peak;
  if (peak > UsableBytes(*free_bytes)) {
    c.why = "the memory estimate with them is " + FormatMemory(peak) + ", " +
            FormatMemory(UsableBytes(*free_bytes)) + " usable on the device";
    return c;
  }
  const int64_t pinned = OffloadHostBytes(with_it);
  if (!host_available_bytes || pinned > UsableHostBytes(*host_available_bytes)) {
    c.why = "with them offload would pin " + FormatMemory(pinned) + " of host memory, " +
            (host_available_bytes ? FormatMemory(UsableHostBytes(*host_available_bytes)) + " usable"
                                  : std::string("the host's available memory unknown"));
    return c;
  }
  c.on = true;
  c.why = "offload pins " + FormatMemory(pinned) + " of host memory with them, " +
          FormatMemory(UsableHostBytes(*host_available_bytes)) + " usable";
  return c;
}

}  // namespace

KeepChoice ResolveKeepAttention(MemoryJob job, std::optional<int64_t> free_bytes,
                                std::optional<int64_t> host_available_bytes) {
  job.keep_attention = true;
  return ResolveKept(job, free_bytes, host_available_bytes);
}

KeepChoice ResolveKeepMlp(MemoryJob job, std::optional<int64_t> free_bytes,
                          std::optional<int64_t> host_available_bytes) {
  job.keep_mlp = true;
  return ResolveKept(job, free_bytes, host_available_bytes);
}

int64_t UsableHostBytes(int64_t available_bytes) {
  return available_bytes / 10 * 9;
}

int64_t LargestOffloadSeqLen(const MemoryJob& job, int64_t available_bytes) {
  constexpr int64_t kStep = 1024;
  const int64_t fixed = OffloadHostBytes(WithSeqLen(job, 0));
  const int64_t per_step = OffloadHostBytes(WithSeqLen(job, kStep)) - fixed;
  const int64_t room = UsableHostBytes(available_bytes) - fixed;
  return per_step <= 0 || room <= 0 ? 0 : room / per_step * kStep;
}

std::vector<std::string> ChangesThatFit(const MemoryJob& job, int64_t free_bytes) {
  std::vector<std::string> changes;
  const auto offer = [&](const MemoryJob& changed, const std::string& what) {
    const int64_t peak = EstimateMemory(changed).peak;
    if (peak > UsableBytes(free_bytes)) return false;
    changes.push_back(what + " (about " + FormatMemory(peak) + ")");
    return true;
  };
  if (!job.checkpointing) {
    MemoryJob on = job;
    on.checkpointing = true;
    offer(on, "train.activation_checkpointing: true");
  }
  if (!job.offload) {
    MemoryJob on = job;
    on.checkpointing = on.offload = true;
    offer(on, job.checkpointing ? "train.activation_offload: true"
                                : "train.activation_offload: true (which turns checkpointing on)");
  }
  // A smaller micro-batch with grad_accum making up the rows, with the options as they are, or
  // else with checkpointing and offload on.
  for (const bool lean : {false, true}) {
    MemoryJob smaller = job;
    if (lean) smaller.checkpointing = smaller.offload = true;
    if (lean && job.checkpointing && job.offload) break;
    bool found = false;
    for (int64_t rows = job.micro_batch_size - 1; rows >= 1 && !found; --rows) {
      smaller.micro_batch_size = rows;
      found = offer(smaller, "train.micro_batch_size: " + std::to_string(rows) +
                                 (lean ? " with train.activation_offload: true" : "") +
                                 " (raise train.grad_accum to keep the batch)");
    }
    if (found) break;
  }
  return changes;
}

std::string DoesNotFitMessage(const MemoryJob& job, int64_t free_bytes) {
  const MemoryEstimate e = EstimateMemory(job);
  std::string m =
      std::string(kRefusalStart) + FormatMemory(e.peak) + " at its peak (" + e.phase +
      ": frozen weights " + FormatMemory(e.frozen_weights) + ", LoRA and optimizer state " +
      FormatMemory(e.lora_state) + ", kept activations " + FormatMemory(e.kept_activations) +
      ", one layer's backward " + FormatMemory(e.layer_working_set) + ", loss " +
      FormatMemory(e.loss) + ", workspace " + FormatMemory(e.workspace) + "), more than the " +
      FormatMemory(UsableBytes(free_bytes)) + " it may use of the " + FormatMemory(free_bytes) +
      " free on the device (90%: the allocator's fragmentation takes some of the "
      "rest). ";
  const int64_t longest = LargestFittingSeqLen(job, free_bytes);
  const std::string options =
      std::string("activation checkpointing ") + (job.checkpointing ? "on" : "off") +
      (job.checkpointing ? (job.offload ? ", offload on" : ", offload off") : "") +
      ", micro_batch_size " + std::to_string(job.micro_batch_size);
  m += longest > 0 ? "The largest data.max_seq_len that fits with these options (" + options +
                         ") is " + std::to_string(longest) + ". "
                   : "Not even data.max_seq_len 1024 fits with these options (" + options + "). ";
  const std::vector<std::string> changes = ChangesThatFit(job, free_bytes);
  if (!changes.empty()) {
    m += "Any of these would make data.max_seq_len " + std::to_string(job.seq_len) + " fit: ";
    for (size_t i = 0; i < changes.size(); ++i) m += (i ? "; " : "") + changes[i];
    m += ". ";
  }
  m += "An estimate can be wrong: resources.ignore_memory_estimate: true runs the job anyway.";
  return m;
}

}  // namespace qlorad
