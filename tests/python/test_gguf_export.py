"""`qlorad-train export --format gguf` read back with the `gguf` package (llama.cpp's own gguf-py,
from PyPI): tiny random Llama (llama3 rope scaling, tied embeddings, head_dim 24), Mistral and Qwen2
(q/k/v biases) models with byte-level BPE tokenizers trained here and a PEFT adapter, exported as
f16 and q8_0. Every tensor's name, shape, type and values are checked against PEFT's own
merge_and_unload of the same adapter (f16: within fp16 rounding; q8_0: within each block's error),
the q/k rotary permutation by undoing it, and the metadata key by key. Needs build/bin/qlorad-train
(QLORAD_BIN_DIR)."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
gguf = pytest.importorskip("gguf")
tokenizers = pytest.importorskip("tokenizers")
sys.path.insert(0, str(Path(__file__).parent))
from test_hf_parity import COMMON, make_model, make_peft_adapter, qlorad  # noqa: E402
from test_tokenizer_parity import CORPUS, LLAMA3_PATTERN  # noqa: E402

QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
VOCAB = 640  # > the tokenizer's ~605 ids: the rest are padding rows ([PAD<id>], UNUSED)
F16 = gguf.GGMLQuantizationType.F16
F32 = gguf.GGMLQuantizationType.F32
Q8_0 = gguf.GGMLQuantizationType.Q8_0

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# Per family: the split regex, the special tokens, the chat template, what tokenizer_config.json
# names, and the llama.cpp names expected back.
FAMILIES = {
    "llama": dict(pattern=LLAMA3_PATTERN, pre="llama-bpe", arch="llama",
                  specials=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
                            "<|start_header_id|>", "<|end_header_id|>"],
                  bos="<|begin_of_text|>", eos="<|eot_id|>", template=LLAMA3_TEMPLATE),
    "mistral": dict(pattern=LLAMA3_PATTERN, pre="llama-bpe", arch="llama",
                    specials=["<s>", "</s>", "[INST]", "[/INST]"], bos="<s>", eos="</s>",
                    template=None),
    "qwen2": dict(pattern=QWEN2_PATTERN, pre="qwen2", arch="qwen2",
                  specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None,
                  eos="<|im_end|>", pad="<|endoftext|>", template=CHATML_TEMPLATE),
}


def make_tokenizer(kind: str, model_dir: Path) -> tokenizers.Tokenizer:
    """A byte-level BPE tokenizer of the family's layout, saved with its tokenizer_config.json."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors, trainers
    fam = FAMILIES[kind]
    tok = Tokenizer(models.BPE(ignore_merges=kind == "llama"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(fam["pattern"]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=fam["specials"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_tokens(["hello world"])  # an added token that is not special: USER_DEFINED
    tok.decoder = tokenizers.decoders.ByteLevel()
    if fam["bos"]:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{fam['bos']} $A", special_tokens=[(fam["bos"], tok.token_to_id(fam["bos"]))])
    tok.save(str(model_dir / "tokenizer.json"))
    config = {"bos_token": fam["bos"], "eos_token": fam["eos"], "pad_token": fam.get("pad"),
              "tokenizer_class": "PreTrainedTokenizerFast"}
    if fam["template"]:
        config["chat_template"] = fam["template"]
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    return tok


def export_gguf(model_dir: Path, adapter: Path, out: Path, qtype: str):
    proc = qlorad("export", "--model", str(model_dir), "--adapter", str(adapter), "--out", str(out),
                  "--format", "gguf", "--type", qtype, "--json", "--merge-into", "original")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert any("exported" in e.get("message", "") for e in events), proc.stdout
    return gguf.GGUFReader(str(out / f"model-{qtype}.gguf")), events


def hf_to_gguf_name(name: str) -> str:
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}
    if name in fixed:
        return fixed[name]
    parts = name.split(".")  # model.layers.N.<module...>.<weight|bias>
    module = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
              "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    return f"blk.{parts[2]}.{module['.'.join(parts[3:-1])]}.{parts[-1]}"


def permute(w, heads: int):
    """llama.cpp's converter (LlamaModel.permute): each head's two rotary halves interleaved."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def unpermute(w, heads: int):
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def llama3_rope_factors(cfg: dict) -> list[float]:
    """The converter's rope_freqs for llama3 scaling (LlamaModel.generate_extra_tensors)."""
    import torch
    rope = cfg["rope_parameters"]
    dim = cfg["head_dim"]
    freqs = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    old = rope["original_max_position_embeddings"]
    low, high = old / rope["low_freq_factor"], old / rope["high_freq_factor"]
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high:
            out.append(1.0)
        elif wavelen > low:
            out.append(rope["factor"])
        else:
            smooth = (old / wavelen - rope["low_freq_factor"]) / (
                rope["high_freq_factor"] - rope["low_freq_factor"])
            out.append(1 / ((1 - smooth) / rope["factor"] + smooth))
    return out


def field(reader, key):
    f = reader.get_field(key)
    assert f is not None, f"metadata key {key} is missing"
    return f.contents()


def expected_type(gguf_name: str, shape, qtype: str):
    """llama.cpp's rules: 1-D, *_norm and non-.weight tensors F32; q8_0 rows not whole 32-value
    blocks fall back to F16."""
    if len(shape) == 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
        return F32
    if qtype == "q8_0":
        return Q8_0 if shape[-1] % 32 == 0 else F16
    return F16


def check_values(name, ttype, raw, ref):
    """ref: the fp32 merged tensor as the file should hold it (already permuted)."""
    got = gguf.quants.dequantize(raw, ttype).reshape(ref.shape).astype(np.float64)
    ref = ref.astype(np.float64)
    if ttype == F32:
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7, err_msg=name)
    elif ttype == F16:
        # fp16 rounding of values that PEFT's merge and ours may differ in by float32 summation
        # order; nearly all must be exactly what numpy's fp16 rounding of the reference gives.
        bound = np.abs(ref) * 2.0 ** -11 + 2.0 ** -25 + 1e-6 * np.abs(ref)
        assert np.all(np.abs(got - ref) <= bound), name
        assert np.mean(got == ref.astype(np.float16).astype(np.float64)) > 0.99, name
    else:
        # One fp16 scale per 32 values: the int8 grid costs at most scale / 2 per value, and the
        # scale's own fp16 rounding at most 127 * scale * 2^-11 more.
        blocks = np.asarray(raw).reshape(-1, 34)
        scales = blocks[:, :2].copy().view(np.float16).astype(np.float64).reshape(-1)
        err = np.abs(got - ref).reshape(-1, 32)
        bound = (scales / 2 + 127 * scales * 2.0 ** -11 + 1e-7)[:, None]
        assert np.all(err <= bound), f"{name}: max excess {np.max(err - bound):.3e}"
        # The scales are max|x| / 127 of each block, rounded to fp16.
        amax = np.abs(ref).reshape(-1, 32).max(axis=1)
        np.testing.assert_allclose(scales, (amax / 127).astype(np.float16), rtol=2.0 ** -10,
                                   err_msg=name)
    return got


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2"])
def test_gguf_export_reads_back(tmp_path: Path, kind: str, qtype: str):
    fam = FAMILIES[kind]
    # intermediate_size 80: down_proj rows are not whole q8_0 blocks, so they fall back to F16.
    overrides = {"vocab_size": VOCAB}
    if kind == "llama":
        overrides["intermediate_size"] = 80
    model = make_model(kind, tmp_path / "model", **overrides)
    tok = make_tokenizer(kind, tmp_path / "model")
    peft_model = make_peft_adapter(model, tmp_path / "adapter", use_rslora=kind == "qwen2")
    merged = copy.deepcopy(peft_model).merge_and_unload()
    reference = {k: v.detach().numpy() for k, v in merged.state_dict().items()}
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())

    reader, events = export_gguf(tmp_path / "model", tmp_path / "adapter", tmp_path / "out", qtype)
    # Mistral's window (8 here) has no GGUF form: the export says it left it out.
    warned = [e for e in events if e.get("level") == "warning" and "sliding_window" in e["message"]]
    assert len(warned) == (1 if kind == "mistral" else 0), events

    # Tensors: the merged weights under llama.cpp's names; tied embeddings leave out `output`.
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    expected = {}
    for name, value in reference.items():
        if name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue
        if fam["arch"] == "llama" and (".q_proj." in name or ".k_proj." in name):
            value = permute(value, heads if ".q_proj." in name else kv_heads)
        expected[hf_to_gguf_name(name)] = value
    if kind == "llama":  # llama3 rope scaling travels as per-frequency divisors
        expected["rope_freqs.weight"] = np.array(llama3_rope_factors(cfg), dtype=np.float32)
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == sorted(expected)
    assert ("output.weight" in tensors) == (kind != "llama")
    seen_types = set()
    for name, ref in expected.items():
        t = tensors[name]
        assert [int(d) for d in reversed(t.shape)] == list(ref.shape), name  # ggml order
        assert t.tensor_type == expected_type(name, ref.shape, qtype), name
        seen_types.add(t.tensor_type)
        got = check_values(name, t.tensor_type, t.data, ref)
        if fam["arch"] == "llama" and (".attn_q." in name or ".attn_k." in name):
            # Undoing the permutation gives the Hugging Face rows back; the file's own order does
            # not (so the permutation is real, not an identity at these shapes).
            n = heads if ".attn_q." in name else kv_heads
            hf_name = [k for k in reference if hf_to_gguf_name(k) == name][0]
            tol = 1e-6 if t.tensor_type == F32 else np.max(np.abs(got - ref)) + 1e-7
            assert np.max(np.abs(unpermute(got, n) - reference[hf_name])) <= tol, name
            assert np.max(np.abs(got - reference[hf_name])) > 100 * tol, name
    if qtype == "q8_0":
        assert seen_types == ({F32, Q8_0, F16} if kind == "llama" else {F32, Q8_0})
    else:
        assert seen_types == {F32, F16}

    # Architecture metadata.
    arch = fam["arch"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    rope = cfg.get("rope_parameters") or {}
    want = {
        "general.architecture": arch,
        "general.type": "model",
        "general.name": "model",
        "general.file_type": 1 if qtype == "f16" else 7,
        "general.quantization_version": 2,
        "general.alignment": 32,
        f"{arch}.vocab_size": VOCAB,
        f"{arch}.context_length": cfg["max_position_embeddings"],
        f"{arch}.embedding_length": cfg["hidden_size"],
        f"{arch}.block_count": cfg["num_hidden_layers"],
        f"{arch}.feed_forward_length": cfg["intermediate_size"],
        f"{arch}.attention.head_count": heads,
        f"{arch}.attention.head_count_kv": kv_heads,
        f"{arch}.attention.key_length": head_dim,
        f"{arch}.attention.value_length": head_dim,
        f"{arch}.rope.dimension_count": head_dim,
    }
    for key, value in want.items():
        assert field(reader, key) == value, key
    assert field(reader, f"{arch}.rope.freq_base") == pytest.approx(
        rope.get("rope_theta", cfg.get("rope_theta")), rel=1e-7)
    assert field(reader, f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(
        COMMON["rms_norm_eps"], rel=1e-7)
    assert reader.get_field(f"{arch}.rope.scaling.type") is None  # llama3: rope_freqs instead

    # Tokenizer metadata: every id up to vocab_size, with llama.cpp's token types.
    by_id = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    added = {a.content: a for a in tok.get_added_tokens_decoder().values()}
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == VOCAB
    for i in range(VOCAB):
        if i not in by_id:
            assert (tokens[i], types[i]) == (f"[PAD{i}]", 5), i
            continue
        text = by_id[i]
        want_type = 1 if text not in added else (3 if added[text].special else 4)
        assert (tokens[i], types[i]) == (text, want_type), i
    assert types.count(4) == 1 and tokens[types.index(4)] == "hello world"
    merges = json.loads((tmp_path / "model" / "tokenizer.json").read_text())["model"]["merges"]
    assert field(reader, "tokenizer.ggml.merges") == [
        m if isinstance(m, str) else " ".join(m) for m in merges]
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == fam["pre"]
    assert field(reader, "tokenizer.ggml.eos_token_id") == tok.token_to_id(fam["eos"])
    if fam["bos"]:
        assert field(reader, "tokenizer.ggml.bos_token_id") == tok.token_to_id(fam["bos"])
        assert field(reader, "tokenizer.ggml.add_bos_token") is True
    else:
        assert reader.get_field("tokenizer.ggml.bos_token_id") is None
        assert reader.get_field("tokenizer.ggml.add_bos_token") is None
    if fam.get("pad"):
        assert field(reader, "tokenizer.ggml.padding_token_id") == tok.token_to_id(fam["pad"])
    if fam["template"]:
        assert field(reader, "tokenizer.chat_template") == fam["template"]
    else:
        assert reader.get_field("tokenizer.chat_template") is None

    # The Modelfile imports the file and stops at the end-of-turn token.
    modelfile = (tmp_path / "out" / "Modelfile").read_text()
    assert f"FROM ./model-{qtype}.gguf\n" in modelfile
    assert f'PARAMETER stop "{fam["eos"]}"\n' in modelfile
    assert "TEMPLATE" not in [line.split(" ")[0] for line in modelfile.splitlines()]


def test_gguf_export_errors_name_what_is_wrong(tmp_path: Path):
    model = make_model("qwen2", tmp_path / "model", vocab_size=VOCAB)
    make_peft_adapter(model, tmp_path / "adapter", use_rslora=False)
    base = ["export", "--model", str(tmp_path / "model"), "--adapter", str(tmp_path / "adapter"),
            "--format", "gguf", "--json"]

    # No tokenizer.json: named, and nothing is written.
    proc = qlorad(*base, "--out", str(tmp_path / "a"), check=False)
    assert proc.returncode != 0 and "tokenizer.json: missing" in proc.stdout, proc.stdout
    assert not (tmp_path / "a").exists()

    make_tokenizer("qwen2", tmp_path / "model")
    # An output directory with something in it is refused and left alone.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model-f16.gguf").write_text("earlier")
    proc = qlorad(*base, "--out", str(tmp_path / "b"), check=False)
    assert proc.returncode == 2 and "--out" in proc.stdout, proc.stdout
    assert (tmp_path / "b" / "model-f16.gguf").read_text() == "earlier"

    # Options of the other format are refused naming them.
    proc = qlorad(*base, "--out", str(tmp_path / "c"), "--dtype", "bf16", check=False)
    assert proc.returncode != 0 and "--dtype" in proc.stdout, proc.stdout
    proc = qlorad("export", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "c"),
                  "--type", "q8_0", "--json", check=False)
    assert proc.returncode != 0 and "--type" in proc.stdout, proc.stdout

    # A SentencePiece-style vocabulary (Llama 2, Mistral 7B) is refused naming the field.
    path = tmp_path / "model" / "tokenizer.json"
    spm = json.loads(path.read_text())
    spm["model"]["byte_fallback"] = True
    path.write_text(json.dumps(spm))
    proc = qlorad(*base, "--out", str(tmp_path / "d"), check=False)
    assert proc.returncode != 0 and "byte_fallback" in proc.stdout, proc.stdout

    # An unknown pre-tokenizer regex is refused rather than guessed.
    make_tokenizer("qwen2", tmp_path / "model")
    other = json.loads(path.read_text())
    other["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\S+"
    path.write_text(json.dumps(other))
    proc = qlorad(*base, "--out", str(tmp_path / "e"), check=False)
    assert proc.returncode != 0 and "pre_tokenizer" in proc.stdout, proc.stdout

    # An architecture with no GGUF export names config.json's model_type.
    make_tokenizer("qwen2", tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["model_type"] = "gemma"
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    proc = qlorad(*base, "--out", str(tmp_path / "f"), check=False)
    assert proc.returncode != 0 and "model_type" in proc.stdout, proc.stdout


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2"])
def test_a_forward_pass_from_the_gguf_matches_our_eval(tmp_path: Path, kind: str, qtype: str):
    """transformers' own GGUF loader runs the file (it reads the architecture from the metadata and
    undoes the q/k permutation itself): its per-token losses equal our eval's (base + adapter)
    within the format's error, i.e. as closely as the same merged weights rounded through the
    format by gguf-py's quantizer do."""
    from test_hf_parity import evaluate, max_abs_diff, reference_losses, report, write_data
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    overrides = {"vocab_size": VOCAB}
    if kind == "mistral":
        overrides["sliding_window"] = None  # llama.cpp's llama attends to the whole context
    model = make_model(kind, tmp_path / "model", **overrides)
    make_tokenizer(kind, tmp_path / "model")
    peft_model = make_peft_adapter(model, tmp_path / "adapter", use_rslora=kind == "qwen2")
    export_gguf(tmp_path / "model", tmp_path / "adapter", tmp_path / "out", qtype)
    rows = write_data(tmp_path / "data.jsonl")
    ours = evaluate(tmp_path / "model", tmp_path / "data.jsonl", tmp_path / "adapter")

    # transformers' GGUF reader knows no rope_freqs tensor, so llama3 scaling comes from config.json.
    extra = {}
    if kind == "llama":
        extra["config"] = transformers.AutoConfig.from_pretrained(tmp_path / "model")
    from_gguf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", gguf_file=f"model-{qtype}.gguf", dtype=torch.float32, **extra).eval()
    gguf_losses = reference_losses(from_gguf, rows)

    rounded = copy.deepcopy(peft_model).merge_and_unload().eval()
    with torch.no_grad():
        for name, p in rounded.named_parameters():
            ttype = expected_type(hf_to_gguf_name(name), tuple(p.shape), qtype)
            if ttype != F32:
                q = gguf.quants.quantize(p.numpy(), ttype)
                p.copy_(torch.from_numpy(gguf.quants.dequantize(q, ttype)).reshape(p.shape))
    rounded_losses = reference_losses(rounded, rows)

    format_error = max_abs_diff(rounded_losses, ours)
    diff = max_abs_diff(gguf_losses, ours)
    report(f"{kind} {qtype}: GGUF forward vs our eval (format's own error {format_error:.3e})",
           diff)
    assert max_abs_diff(gguf_losses, rounded_losses) < 1e-4
    assert diff <= format_error + 1e-4
    assert format_error > 1e-5  # the rounding is visible, so the comparison above means something
