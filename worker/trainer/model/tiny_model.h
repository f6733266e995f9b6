// A deterministic tiny Llama (HF directory: config.json + model.safetensors) for demos and tests.
// Weights come from SplitMix64, not torch, so the same seed gives the same bytes everywhere.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "worker/trainer/model/model_config.h"

namespace qlorad::trainer {

// hidden 64, 2 layers, 4 heads, 2 KV heads (GQA), head_dim 16, vocab 320 (bytes + specials).
// intermediate_size 176 is not a multiple of 64 on purpose, so code that assumes it is fails
// here first; every weight still has an even number of elements and whole NF4 blocks.
LlamaConfig TinyLlamaConfig();

Status MakeTinyModel(const std::string& out_dir, uint64_t seed);

}  // namespace qlorad::trainer
