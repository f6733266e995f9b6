"""A random-weight Llama in Hugging Face layout, and random-token data, for benchmarks.

Every benchmark that trains writes its model and data with these, so the shapes, the seeds and the
file layout are the same everywhere: bf16 weights drawn on the device (fast: an 8B model is
seconds of randn, then one safetensors file), norms at one, `config.json` as transformers and
qlorad-train read it, and JSONL rows of token ids (the trainer's `input_ids` data format).
"""
import json
import math

import torch
from safetensors.torch import save_file

# Llama-3.2-1B's shapes (tied embeddings, GQA 32/8, head_dim 64).
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, head_dim=64, vocab_size=128256, rms_norm_eps=1e-5, rope_theta=500000.0,
                max_position_embeddings=131072, tie_word_embeddings=True)
# Llama-3.1-8B's shapes (untied lm_head, llama3 rope scaling).
LLAMA_8B = dict(LLAMA_1B, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, head_dim=128,
                tie_word_embeddings=False,
                rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                  original_max_position_embeddings=8192))
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def projection_shapes(c):
    """(out_features, in_features) of each decoder projection."""
    h, i, d = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    return {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
            "gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}


def make_model(path, config, device, layers=None):
    """Writes config.json and model.safetensors into path; returns the config written."""
    c = dict(config)
    if layers:
        c["num_hidden_layers"] = layers
    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*shape):
        return (torch.randn(shape, generator=gen, device=device) * 0.02).to(torch.bfloat16).cpu()

    tensors = {"model.embed_tokens.weight": rand(c["vocab_size"], c["hidden_size"]),
               "model.norm.weight": torch.ones(c["hidden_size"], dtype=torch.bfloat16)}
    for layer in range(c["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        for name, shape in projection_shapes(c).items():
            group = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            tensors[f"{prefix}{group}.{name}.weight"] = rand(*shape)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"{prefix}{norm}.weight"] = torch.ones(c["hidden_size"], dtype=torch.bfloat16)
    if not c.get("tie_word_embeddings", True):
        tensors["lm_head.weight"] = rand(c["vocab_size"], c["hidden_size"])
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(dict(c, architectures=["LlamaForCausalLM"], model_type="llama",
                                                      torch_dtype="bfloat16", hidden_act="silu")))
    return c


def make_data(path, vocab, rows, seq_len, docs_per_row=1):
    """Random ids for `rows` rows of seq_len inputs and targets each: one JSONL record of seq_len + 1
    ids per row, or docs_per_row records of seq_len / docs_per_row + 1 ids (a document of n + 1 ids
    gives n input-target pairs, so they pack into full rows of that many documents)."""
    if seq_len % docs_per_row:
        raise ValueError(f"seq_len {seq_len} is not a multiple of docs_per_row {docs_per_row}")
    gen = torch.Generator().manual_seed(1)
    with open(path, "w") as f:
        for _ in range(rows * docs_per_row):
            ids = torch.randint(0, vocab, (seq_len // docs_per_row + 1,), generator=gen).tolist()
            f.write(json.dumps({"input_ids": ids}) + "\n")


def nf4_bytes(numel):
    # packed nibbles + one absmax code per 64 + one fp32 nested absmax per 256 blocks
    blocks = math.ceil(numel / 64)
    return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / 256)
