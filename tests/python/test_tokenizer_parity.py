"""`qlorad-train tokenize` against the Hugging Face `tokenizers` library: tiny tokenizers are
trained here, saved as tokenizer.json, and both sides encode the same tricky strings."""
import json
import os
import subprocess
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import (  # noqa: E402
    Regex,
    Tokenizer,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

BIN_DIR = Path(os.environ.get("QLORAD_BIN_DIR", "/work/main/build/bin"))
TRAIN = BIN_DIR / "qlorad-train"

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's the dog's day, isn't it?",
    "Café crème brûlée, naïve façade; Ångström über straße.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Emoji: 😀😃🎉👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇯🇵",
    "Numbers 1234567890, 3.14159, 2024-01-01, 1,000,000 and 007.",
    "def f(x):\n    return x  *  2\n\n\n\tindented\ttabs\r\nwindows line",
    "    leading spaces and trailing spaces    ",
    "I'M SHOUTING, YOU'RE WHISPERING, WE'VE HEARD, THEY'LL SEE, HE'D KNOW",
] * 20

TRICKY = [
    "",
    " ",
    "hello",
    "Hello, world!",
    "Café crème brûlée à la mode — naïve",
    "Zoë's ﬁancé déjà vu",
    "東京タワーと北京烤鸭",
    "한국어 텍스트",
    "😀 emoji 🎉🎉 👨‍👩‍👧 🇯🇵",
    "12345678901234567890",
    "pi is 3.14159265, year 2024",
    "a  b   c    d",
    "     ",
    "line1\nline2\n\n\nline5",
    "\n\n\n",
    "tabs\tand\t\ttabs\t",
    "mixed \t \n \r\n whitespace   \n  ",
    "trailing space ",
    "<|begin_of_text|>Hello<|eot_id|>",
    "text with <|end_of_text|> inside and <|begin_of_text|><|eot_id|> twice",
    "partial <|begin_of_text and <|eot_id",
    "I'M DON'T WE'LL you'RE",
    "hello world and hello  world",
    "\u00a0non-breaking\u2003em space\u3000ideographic",
    "x" * 300,
    "e\u0301 combining, \u2019curly\u2019 quotes, IT'S, it\u2019s",
]


def _fuzz_strings(count=40, seed=1234):
    """Random mixes of the troublesome classes: letters, digits, marks, spaces, newlines."""
    import random

    rng = random.Random(seed)
    pool = list("aZé東😀1 \t\n\r'.,!-") + ["<|eot_id|>", "  ", "\n\n", "'s", "123", "\u00a0"]
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(count)]


TRICKY += _fuzz_strings()


def train(ignore_merges, llama3_split):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if llama3_split:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_tokens(["hello world"])  # a non-special added token, matched before pre-tokenization
    if llama3_split:
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train_llama2(metaspace):
    """BPE with byte fallback as Llama 2 and Mistral use it: "▁" for spaces, either through a
    Metaspace pre-tokenizer or through Prepend + Replace normalizers (both layouts exist)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="\u2581", prepend_scheme="first", split=False
        )
    else:
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
        )
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
        limit_alphabet=40,  # leaves CJK and emoji out, so they take the byte fallback
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    return tok


def save(tok, path, string_merges=False):
    tok.save(str(path))
    if string_merges:  # the older "a b" layout; byte-level tokens never hold a real space
        config = json.loads(path.read_text())
        config["model"]["merges"] = [" ".join(m) for m in config["model"]["merges"]]
        path.write_text(json.dumps(config))
        # The library must read the rewritten file the same way.
        assert Tokenizer.from_file(str(path)).encode("hello there").ids == tok.encode(
            "hello there"
        ).ids


def ours_many(path, texts, no_special):
    """One qlorad-train process for all the strings (tokenize --jsonl)."""
    args = [str(TRAIN), "tokenize", "--tokenizer", str(path), "--jsonl"]
    if no_special:
        args.append("--no-special")
    stdin = "".join(json.dumps(t) + "\n" for t in texts)
    proc = subprocess.run(args, input=stdin.encode("utf-8"), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(texts)
    return [json.loads(line)["ids"] for line in lines]


def ours(path, text, no_special):
    return ours_many(path, [text], no_special)[0]


def theirs(tok, text, no_special):
    tok.encode_special_tokens = no_special
    try:
        return tok.encode(text, add_special_tokens=not no_special).ids
    finally:
        tok.encode_special_tokens = False


def assert_same_ids(tok, path, texts, no_special):
    got_all = ours_many(path, texts, no_special)
    mismatches = []
    for text, got in zip(texts, got_all):
        want = theirs(tok, text, no_special)
        if got != want:
            mismatches.append((text, want, got))
    assert not mismatches, mismatches


@pytest.mark.parametrize(
    "ignore_merges,llama3_split,string_merges",
    [(True, True, False), (True, True, True), (False, True, False), (False, False, False)],
    ids=["llama3", "llama3-string-merges", "llama3-no-ignore-merges", "gpt2-bytelevel"],
)
@pytest.mark.parametrize("no_special", [False, True], ids=["special", "no-special"])
def test_ids_match_tokenizers(tmp_path, ignore_merges, llama3_split, string_merges, no_special):
    tok = train(ignore_merges, llama3_split)
    path = tmp_path / "tokenizer.json"
    save(tok, path, string_merges)
    assert_same_ids(tok, path, TRICKY, no_special)


@pytest.mark.parametrize("no_special", [False, True], ids=["special", "no-special"])
def test_nfc_normalizer_matches_tokenizers(tmp_path, no_special):
    """Qwen2's tokenizer.json: NFC, then the byte-level split. Decomposed input must compose."""
    tok = train(True, True)
    tok.normalizer = normalizers.NFC()
    path = tmp_path / "tokenizer.json"
    save(tok, path)
    composed = ["Cafe\u0301", "\u212b ngstr\u00f6m", "\u1100\u1161\u11a8", "o\u0308\u0301"]
    assert tok.encode("Cafe\u0301").ids == tok.encode("Caf\u00e9").ids  # NFC really runs
    assert_same_ids(tok, path, TRICKY + composed, no_special)


@pytest.mark.parametrize("metaspace", [True, False], ids=["metaspace", "prepend-replace"])
@pytest.mark.parametrize("no_special", [False, True], ids=["special", "no-special"])
def test_llama2_style_ids_match_tokenizers(tmp_path, metaspace, no_special):
    tok = train_llama2(metaspace)
    path = tmp_path / "tokenizer.json"
    save(tok, path)
    texts = TRICKY + ["<s>Hello</s> <s> world", " leading", "\u2581already marked"]
    assert_same_ids(tok, path, texts, no_special)
    # The byte fallback must really be exercised: 東 is outside the trained alphabet.
    assert tok.token_to_id("<0xE6>") in theirs(tok, "東", no_special)


def test_bos_and_special_tokens_are_used(tmp_path):
    # Guards the parity test against a trivially agreeing setup.
    tok = train(True, True)
    path = tmp_path / "tokenizer.json"
    save(tok, path)
    bos = tok.token_to_id("<|begin_of_text|>")
    eot = tok.token_to_id("<|eot_id|>")
    ids = ours(path, "hi<|eot_id|>", no_special=False)
    assert ids[0] == bos and eot in ids
    plain = ours(path, "hi<|eot_id|>", no_special=True)
    assert bos not in plain and eot not in plain


def test_plain_output_is_space_separated_ids(tmp_path):
    tok = train(True, True)
    path = tmp_path / "tokenizer.json"
    save(tok, path)
    proc = subprocess.run(
        [str(TRAIN), "tokenize", "--tokenizer", str(path)],
        input="Café 123".encode(),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert [int(x) for x in proc.stdout.split()] == tok.encode("Café 123").ids


def test_unsupported_model_is_a_clear_error(tmp_path):
    tok = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    proc = subprocess.run(
        [str(TRAIN), "tokenize", "--tokenizer", str(path), "--json"],
        input=b"a",
        capture_output=True,
        timeout=60,
    )
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode != 0
    assert "tokenizer.json: model.type WordPiece is not supported" in out, out
