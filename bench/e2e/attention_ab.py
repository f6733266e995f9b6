"""Flash attention 2 against cuDNN attention through torch SDPA (sdpa_kernel), causal, bf16, forward +
backward, at Llama-3.2-1B and Llama-3.1-8B attention shapes; prints ms and TF/s of each (mean of 20
after 3 warm-up). Run on the GPU machine: python3 bench/e2e/attention_ab.py"""
import torch, time
from torch.nn.attention import sdpa_kernel, SDPBackend
def bench(b, s, h, hk, d, backend, gqa_expand):
    q = torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(b, hk, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(b, hk, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    go = torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16)
    def step():
        kk, vv = (k.repeat_interleave(h // hk, 1), v.repeat_interleave(h // hk, 1)) if gqa_expand else (k, v)
        with sdpa_kernel([backend]):
            o = torch.nn.functional.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=not gqa_expand and hk != h)
        o.backward(go)
        return o
    try:
        o = step()
    except Exception as e:
        return f"error: {str(e)[:160]}"
    ref = None
    for _ in range(3): step()
    torch.cuda.synchronize(); t = time.perf_counter(); n = 20
    for _ in range(n): step()
    torch.cuda.synchronize(); ms = (time.perf_counter() - t) / n * 1e3
    flops = 4 * b * h * s * s * d / 2 * 3.5
    return f"{ms:7.3f} ms fwd+bwd  {flops / ms / 1e9:6.0f} TF/s"
for (name, b, s, h, hk, d) in [("1b 4x2048", 4, 2048, 32, 8, 64), ("8b 1x2048", 1, 2048, 32, 8, 128), ("8b 1x32768", 1, 32768, 32, 8, 128)]:
    for be in [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION]:
        for expand in [False, True]:
            print(f"{name:12s} {be.name:16s} expand={expand!s:5s} {bench(b, s, h, hk, d, be, expand)}", flush=True)
