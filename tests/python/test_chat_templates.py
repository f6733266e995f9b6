"""Chat formatting and train-on-completions-only against transformers: for each family we
reproduce (llama3, llama3.1/3.2, chatml/Qwen2, mistral v0.1/v0.2/v0.3, llama2), a small tokenizer is trained here with the
family's special tokens, saved with the family's real chat_template, and `qlorad-train
prepare-data` must render the same text as `apply_chat_template`, produce the same ids, and train
exactly on the assistant replies and their end-of-turn token."""
import json
import os
import subprocess
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

# The later families' templates, as their model repositories' tokenizer_config.json ship them.
REAL_TEMPLATES = json.loads((Path(__file__).parent / "hf_chat_templates.json").read_text())
LLAMA31 = REAL_TEMPLATES["meta-llama/Llama-3.1-8B-Instruct"]
LLAMA32 = REAL_TEMPLATES["meta-llama/Llama-3.2-1B-Instruct"]
MISTRAL_V02 = REAL_TEMPLATES["mistralai/Mistral-7B-Instruct-v0.2"]  # its later, system-aware one
MISTRAL_V03 = REAL_TEMPLATES["mistralai/Mistral-7B-Instruct-v0.3"]

BIN_DIR = Path(os.environ.get("QLORAD_BIN_DIR", "/work/main/build/bin"))
TRAIN = BIN_DIR / "qlorad-train"

# The templates as the model repositories ship them (tokenizer_config.json's chat_template).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception("
    "'Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + "
    "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}"
    "{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

CORPUS = [
    "You are a helpful assistant. Be brief and exact.",
    "What is the capital of France? Paris is the capital of France.",
    "Écris une phrase en français, s'il te plaît. Voilà une phrase.",
    "東京は日本の首都です。 12345 + 678 = 13023",
    "def add(a, b):\n    return a + b\n\n",
] * 20

# family -> (template, special tokens, bos, eos, byte-level BPE or byte-fallback Metaspace BPE)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"]
FAMILIES = {
    "llama3": (LLAMA3, LLAMA3_SPECIALS, "<|begin_of_text|>", "<|eot_id|>", True),
    "llama3.1": (LLAMA31, LLAMA3_SPECIALS, "<|begin_of_text|>", "<|eot_id|>", True),
    "llama3.2": (LLAMA32, LLAMA3_SPECIALS, "<|begin_of_text|>", "<|eot_id|>", True),
    "chatml": (QWEN2, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", True),
    "mistral": (MISTRAL, ["<unk>", "<s>", "</s>"], "<s>", "</s>", False),
    "mistral-v0.2": (MISTRAL_V02, ["<unk>", "<s>", "</s>"], "<s>", "</s>", False),
    "mistral-v0.3": (MISTRAL_V03, ["<unk>", "<s>", "</s>"], "<s>", "</s>", False),
    "llama2": (LLAMA2, ["<unk>", "<s>", "</s>"], "<s>", "</s>", False),
}
# data.chat_template names where they differ from the test's family names.
NAMES = {"llama3.2": "llama3.1"}
# Llama 3.2's template asks strftime_now for today's date before its "26 Jul 2024" fallback;
# transformers defines strftime_now, so the test passes the date the way a caller would
# (apply_chat_template's date_string), the same literal we take from the template.
TEMPLATE_KWARGS = {"llama3.2": {"date_string": "26 Jul 2024"}}

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant.\n"},
    {"role": "user", "content": "  What is the capital of France?  "},
    {"role": "assistant", "content": "Paris is the capital of France. "},
    {"role": "user", "content": "東京は? 12345\n\nThanks"},
    {"role": "assistant", "content": "\ndef add(a, b):\n    return a + b"},
]


def make_model_dir(tmp_path, family):
    template, specials, bos, eos, byte_level = FAMILIES[family]
    if byte_level:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials,
                                      initial_alphabet=alphabet, show_progress=False)
    else:  # Llama 2 / Mistral: "▁" for spaces and byte fallback
        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                     prepend_scheme="first", split=False)
        trainer = trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials + [f"<0x{b:02X}>" for b in range(256)],
            limit_alphabet=60, show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    model_dir = tmp_path / family
    model_dir.mkdir()
    tok.save(str(model_dir / "tokenizer.json"))
    config = {"chat_template": template, "bos_token": bos, "eos_token": eos,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"),
                                              bos_token=bos, eos_token=eos)
    hf.chat_template = template
    return model_dir, hf


def prepare(model_dir, tmp_path, records, *extra):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = subprocess.run(
        [str(TRAIN), "prepare-data", "--model", str(model_dir), "--data", str(data), *extra],
        capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def hf_text(hf, family, messages):
    return hf.apply_chat_template(messages, tokenize=False, **TEMPLATE_KWARGS.get(family, {}))


def hf_ids(hf, messages, family=None):
    out = hf.apply_chat_template(messages, tokenize=True, **TEMPLATE_KWARGS.get(family, {}))
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def assistant_spans(family, text, messages, eos):
    """Character spans of what must be trained: each reply as the template writes it, and its
    end-of-turn token."""
    spans, cursor = [], 0
    for m in messages:
        if m["role"] != "assistant":
            continue
        content = m["content"]
        reply = {"llama3": content.strip() + "<|eot_id|>",
                 "llama3.1": content.strip() + "<|eot_id|>",
                 "llama3.2": content.strip() + "<|eot_id|>",
                 "chatml": content + "<|im_end|>",
                 "mistral": content + eos,
                 "mistral-v0.2": " " + content + eos,
                 "mistral-v0.3": " " + content.strip() + eos,
                 "llama2": " " + content.strip() + " " + eos}[family]
        start = text.index(reply, cursor)
        spans.append((start, start + len(reply)))
        cursor = start + len(reply)
    return spans


def expected_labels(hf, text, ids, spans):
    """A token is trained when it starts inside a reply span (one that straddles a boundary
    belongs to the part where it starts)."""
    enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
    assert list(enc["input_ids"]) == ids
    labels = []
    for tok_id, (start, _) in zip(ids, enc["offset_mapping"]):
        trained = any(s <= start < e for s, e in spans)
        labels.append(tok_id if trained else -100)
    return labels


def assert_matches_transformers(hf, family, ours, cases):
    for got, msgs in zip(ours, cases, strict=True):
        text = hf_text(hf, family, msgs)
        assert got["text"] == text
        ids = hf_ids(hf, msgs, family)
        assert got["input_ids"] == ids
        spans = assistant_spans(family, text, msgs, FAMILIES[family][3])
        assert got["labels"] == expected_labels(hf, text, ids, spans)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("named", [False, True], ids=["from-template", "by-name"])
def test_chat_matches_transformers(tmp_path, family, named):
    model_dir, hf = make_model_dir(tmp_path, family)
    messages = CONVERSATION[1:] if family == "mistral" else CONVERSATION
    no_system = [m for m in CONVERSATION if m["role"] != "system"]
    # Ending on a user turn is where Mistral v0.3 places the system text (the last user turn).
    cases = [messages, no_system, messages[:-1]]
    extra = ["--chat-template", NAMES.get(family, family)] if named else []
    ours = prepare(model_dir, tmp_path, [{"messages": m} for m in cases], *extra)
    assert_matches_transformers(hf, family, ours, cases)
    # Guards against a trivially agreeing setup: the specials really are single tokens, and
    # something is masked and something trained.
    eot = FAMILIES[family][3]
    assert hf.convert_tokens_to_ids(eot) in ours[0]["labels"]
    assert -100 in ours[0]["labels"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_long_chat_matches_transformers(tmp_path, family):
    """Many turns, so many boundaries between trained and untrained text, each placed as
    transformers' offsets place it."""
    model_dir, hf = make_model_dir(tmp_path, family)
    turns = [m for _ in range(30) for m in CONVERSATION[1:]]
    cases = [turns, turns[:-1]]
    if family != "mistral":
        cases.append(CONVERSATION[:1] + turns)
    ours = prepare(model_dir, tmp_path, [{"messages": m} for m in cases])
    assert_matches_transformers(hf, family, ours, cases)
    assert sum(label != -100 for label in ours[0]["labels"]) > 30


def test_sharegpt_renders_like_messages(tmp_path):
    model_dir, hf = make_model_dir(tmp_path, "chatml")
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = [{"from": names[m["role"]], "value": m["content"]} for m in CONVERSATION]
    ours = prepare(model_dir, tmp_path, [{"conversations": sharegpt}])
    assert ours[0]["input_ids"] == hf_ids(hf, CONVERSATION)


def test_all_tokens_mode_trains_everything(tmp_path):
    model_dir, hf = make_model_dir(tmp_path, "llama3")
    ours = prepare(model_dir, tmp_path, [{"messages": CONVERSATION}], "--all-tokens")
    assert ours[0]["labels"] == ours[0]["input_ids"] == hf_ids(hf, CONVERSATION)


def test_text_and_prompt_completion_use_the_tokenizers_bos_and_eos(tmp_path):
    model_dir, hf = make_model_dir(tmp_path, "llama2")
    ours = prepare(model_dir, tmp_path, [{"prompt": "What is 2+2?", "completion": " 4"}])
    want = hf("What is 2+2? 4")["input_ids"] + [hf.eos_token_id]
    assert ours[0]["input_ids"] == want
    prompt_len = len(hf("What is 2+2?")["input_ids"])
    assert ours[0]["labels"] == [-100] * prompt_len + want[prompt_len:]


def prepare_fails(model_dir, tmp_path, records):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = subprocess.run(
        [str(TRAIN), "prepare-data", "--model", str(model_dir), "--data", str(data)],
        capture_output=True, timeout=60)
    assert proc.returncode != 0
    return str(data), proc.stderr.decode() + proc.stdout.decode()


def test_tool_turns_are_refused_naming_line_and_field(tmp_path):
    """Tool calls and tool results are not reproduced yet: a record with either is an error that
    names the file, the line and the field, never a conversation formatted without them."""
    model_dir, _ = make_model_dir(tmp_path, "llama3.1")
    call = {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function",
                            "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]}
    plain = {"messages": CONVERSATION}
    path, err = prepare_fails(model_dir, tmp_path, [plain, {"messages": CONVERSATION[:2] + [call]}])
    assert f"{path}:2: messages[2].tool_calls: tool calls are not supported" in err
    tool = {"role": "tool", "content": "3"}
    path, err = prepare_fails(model_dir, tmp_path, [{"messages": CONVERSATION[:2] + [tool]}])
    assert f"{path}:1: messages[2].role: 'tool': tool turns are not supported" in err


def test_a_template_we_do_not_reproduce_is_refused(tmp_path):
    """Mistral Nemo's template writes "[INST]" with no space: close to v0.3, not the same, so
    auto-detection must refuse it rather than format it as v0.3."""
    model_dir, _ = make_model_dir(tmp_path, "mistral-v0.3")
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = MISTRAL_V03.replace('"[INST] "', '"[INST]"')
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    _, err = prepare_fails(model_dir, tmp_path, [{"messages": CONVERSATION}])
    assert "data.chat_template: the model's chat template is not one we reproduce" in err
