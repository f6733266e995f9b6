"""The trainer's architecture, checked on its sources: worker/trainer/ is a stack of folders, each
one library, and a file may include only from its own folder and from the folders its library
links (the table below, which worker/trainer/CMakeLists.txt draws). The data side (io, tokenizer,
data) is torch-free, so its tests link without LibTorch."""
import re
from pathlib import Path

from conftest import REPO

TRAINER = REPO / "worker" / "trainer"
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]', re.M)
TORCH_HEADER = re.compile(r"^(torch|ATen|c10)/")

# What each folder may include, besides itself (and common/, kernels/, system headers).
BELOW = {
    "io": set(),
    "runtime": set(),
    "tokenizer": {"io"},
    "data": {"tokenizer", "io"},
    "weights": {"io", "runtime"},
    "model": {"weights", "tokenizer", "io", "runtime"},
    "loss": {"runtime"},
    "parallel": {"model", "weights", "tokenizer", "io", "runtime"},
    "train": {"parallel", "model", "loss", "data", "weights", "tokenizer", "io", "runtime"},
    "cli": {"train", "parallel", "model", "loss", "data", "weights", "tokenizer", "io", "runtime"},
}
TORCH_FREE = {"io", "tokenizer", "data"}


def sources():
    for path in sorted(TRAINER.rglob("*")):
        if path.suffix in {".h", ".cc"}:
            yield path


def folder_of(path: Path) -> str:
    return path.relative_to(TRAINER).parts[0]


def includes(path: Path):
    return INCLUDE.findall(path.read_text(errors="replace"))


def test_every_source_sits_in_a_known_folder():
    loose = [str(p.relative_to(REPO)) for p in sources() if folder_of(p) not in BELOW]
    assert loose == [], f"trainer sources outside the layer folders: {loose}"


def test_includes_point_down_the_stack_only():
    upward = []
    for path in sources():
        here = folder_of(path)
        for header in includes(path):
            if not header.startswith("worker/trainer/"):
                continue
            there = Path(header).relative_to("worker/trainer").parts[0]
            if there != here and there not in BELOW[here]:
                upward.append(f"{path.relative_to(REPO)} includes {header}")
    assert upward == [], "includes against the layering:\n" + "\n".join(upward)


def test_the_data_side_is_torch_free():
    torch_users = [f"{p.relative_to(REPO)}: {h}" for p in sources() if folder_of(p) in TORCH_FREE
                   for h in includes(p) if TORCH_HEADER.match(h)]
    assert torch_users == [], f"torch headers on the torch-free side: {torch_users}"


def test_the_check_sees_an_upward_include(tmp_path, monkeypatch):
    # The rule must be able to fail: a model file that includes the loss is caught.
    fake = tmp_path / "worker" / "trainer"
    (fake / "model").mkdir(parents=True)
    (fake / "model" / "bad.h").write_text('#include "worker/trainer/loss/chunked_loss.h"\n')
    monkeypatch.setattr(__import__(__name__), "TRAINER", fake)
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    try:
        test_includes_point_down_the_stack_only()
    except AssertionError as e:
        assert "model/bad.h includes worker/trainer/loss/chunked_loss.h" in str(e)
    else:
        raise AssertionError("an upward include went unnoticed")
