// The weights of a base model with its LoRA adapters merged in, by Hugging Face name, made one at a
// time on demand: what every export format writes (merged_export.h: safetensors; gguf_export.h:
// GGUF). A merged projection is PEFT's merge, W + scale * B @ A, computed in fp32 over the
// dequantized base weight (the NF4 base a QLoRA adapter was trained against).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "worker/trainer/model/llama_model.h"

namespace qlorad::trainer {

struct MergedTensor {
  std::string name;  // e.g. model.layers.0.self_attn.q_proj.weight
  std::vector<int64_t> shape;
  std::function<at::Tensor()> make;  // fp32, contiguous
};

// The model's frozen tensors (embedding, norms, biases, an untied head) then every LoRA target
// (the decoder projections, and lm_head when it has LoRA), merged where it has an adapter.
// `merged_layers` counts those.
std::vector<MergedTensor> MergedTensors(const LlamaModel& model, int64_t* merged_layers);

}  // namespace qlorad::trainer
