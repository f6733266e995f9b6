"""Model FLOPs per trained token of a QLoRA step, and the GPU's dense bf16 peak, for MFU.

Counted from the shapes, per token, a multiply-add being 2 FLOPs (P: a weight's element count):
  base projection (frozen, NF4)   forward 2P, backward 2P (dX only: the weight gets no gradient)
  LoRA A (r x in), B (out x r)    forward 2r(in+out), backward 4r(in+out) (dA and dB, dX through both)
  lm_head (frozen, V x h)         forward 2Vh, backward 2Vh (dX only)
  attention, per layer            forward 4 seq H d (Q K^T and P V over seq keys, H heads of size d),
                                  halved (causal: half the scores are masked), backward twice forward
so that
  F = layers * (sum over the 7 projections of [4 out in + 6 r (in + out)] + 6 seq H d) + 4 V h.
Recompute under activation checkpointing is not counted (it costs time but is not the model's
work, so it shows as a lower MFU); nor are NF4 dequantization, norms, activations and the loss's
softmax (not matmuls).
MFU = F * tokens/s / peak, peak being the GPU's dense bf16 tensor-core rate (no sparsity).
"""
from random_llama import projection_shapes

# Dense bf16 tensor-core peaks in TFLOP/s, by a piece of the device's name (first match wins).
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0)]


def attention_flops(config, seq):
    """Per token per layer, forward and backward: scores and values, causal."""
    forward = 4 * seq * config["num_attention_heads"] * config["head_dim"] / 2
    return 3 * forward  # backward: dQ and dK from the scores, dP and dV from the values


def flops_per_token(config, seq, rank):
    per_layer = sum(4 * out * inp + 6 * rank * (inp + out) for out, inp in projection_shapes(config).values())
    per_layer += attention_flops(config, seq)
    return config["num_hidden_layers"] * per_layer + 4 * config["vocab_size"] * config["hidden_size"]


def peak_tflops(device_name):
    """The dense bf16 peak of a device named so, or None when it is not in the table."""
    for piece, peak in PEAK_TFLOPS:
        if piece in device_name:
            return peak
    return None
