// Loads the Llama of a model directory: plain Hugging Face weights, or a bitsandbytes 4-bit
// checkpoint whose quantized projections are used as stored (see bnb_checkpoint.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "worker/trainer/llama_model.h"
#include "worker/trainer/model_config.h"
#include "worker/trainer/parallel/shard.h"

namespace qlorad::trainer {

struct LoadedModel {
  LlamaModel model{nullptr};
  int64_t prequantized_layers = 0;  // projections that came in NF4 from the checkpoint
  // With ShardOnLoad: this rank's shard of every decoder projection's frozen weight, for
  // parallel::Parallelize (fsdp); those projections hold placeholders of one element.
  parallel::FrozenShards frozen_shards;
};

// Quantize the decoder projections to NF4 as they load (quantization.type nf4).
struct QuantizeOnLoad {
  int64_t block_size = 64;
  bool double_quant = true;
};

// Keep only one rank's fsdp shard (parallel/shard.h) of each decoder projection's frozen weight.
struct ShardOnLoad {
  int rank = 0;
  int world_size = 1;
  bool on_host = false;  // the shards go to host memory (parallel.cpu_offload), not the device
};

// With `prequantized`, each projection that has a bitsandbytes quant_state becomes its stored NF4
// weight (never a dense copy); every other tensor loads as usual. With `quantize`, every other
// decoder projection is quantized the moment it is read, so the device never holds more than one
// dense projection: the load peaks near the NF4 model, not the dense one (a 70B model's bf16
// weights are 140 GB, its NF4 ones 35 GB). The result equals loading dense, then QuantizeNF4.
// With `shard`, each decoder projection is cut as it loads (after quantizing it, so the blocks
// are those of the whole weight) and only this rank's shard is kept: a rank then holds 1/N of
// the decoder, plus the replicated embedding, norms and head. The shards equal cutting the
// unsharded load's weights.
StatusOr<LoadedModel> LoadLlamaModel(const std::string& model_dir, const LlamaConfig& config,
                                     bool prequantized, at::Device device, at::ScalarType dtype,
                                     std::optional<QuantizeOnLoad> quantize = std::nullopt,
                                     std::optional<ShardOnLoad> shard = std::nullopt);

}  // namespace qlorad::trainer
