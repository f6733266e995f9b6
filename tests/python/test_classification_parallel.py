"""task: classification on two ranks (`qlorad-train launch --nproc 2`, Gloo over loopback, CPU)
under ddp and fsdp must train like one rank on the same global batch: one rank takes
grad_accum = 2 micro-batches of 2 examples per step, each of two ranks one. The score head is a
whole trainable parameter beside the LoRA pairs, replicated on every rank: its gradient must be
summed across ranks (a rank's own would train each replica on half the batch) and count once in
the clipping norm (fsdp all-reduces the sharded adapters' squares; the head's, summed over
ranks, would count twice), and the adapter and checkpoints must hold it once. The tiny Llama of
test_hf_parity.py is NF4-quantized (fsdp gathers packed blocks) and computes in fp32; clipping
at 0.5 is active. Per-step losses and gradient norms agree within fp32 summation-order error
(1e-5 relative, as test_parallel_launch.py), and so does the saved adapter (same files, keys,
shapes and configs). Evaluation runs on 7 validation examples in batches of 2, so the ranks
evaluate 4 and 3 of them: eval loss and accuracy are reduced from sums and counts and must equal
one rank's (an average of the ranks' averages would not). A resume checkpoint of the fsdp run
(the head cut over its two shard files) resumes on one rank with the losses of the
uninterrupted one-rank run. Needs build/bin/qlorad-train (QLORAD_BIN_DIR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))
from test_classification import LABELS, write_examples  # noqa: E402
from test_hf_parity import PROJECTIONS, TRAIN, make_model  # noqa: E402

STEPS = 16
RTOL = 1e-5  # fp32, summation order only (test_parallel_launch.py)
ATOL = 1e-6
ADAPTER_NORM_RTOL = 1e-4  # fsdp's adapter against one rank's, tensor by tensor (see below)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cls_ranks")
    make_model("llama", root / "model")
    write_examples(root / "data.jsonl", 16, seed=11)
    write_examples(root / "valid.jsonl", 7, seed=12)
    return root


def spec(root: Path, name: str, world: int, strategy: str, every: int = 0) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(f"""
name: {name}
task: classification
model: {{path: {root / 'model'}}}
quantization: {{type: nf4, block_size: 64, double_quant: true}}
lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: {PROJECTIONS}}}
data: {{path: {root / 'data.jsonl'}, format: input_ids, label_field: label, labels: {json.dumps(LABELS)},
       max_seq_len: 32, shuffle: true, seed: 5, validation: {root / 'valid.jsonl'}}}
train: {{max_steps: {STEPS}, micro_batch_size: 2, grad_accum: {2 // world}, lr: 1.0e-2,
        scheduler: constant, warmup_steps: 0, precision: fp32, seed: 7, max_grad_norm: 0.5,
        eval_steps: 8}}
resources: {{gpus: {world}, device: cpu}}
parallel: {{strategy: {strategy}}}
checkpoint: {{every_steps: {every}, keep: 5, output_dir: {root / name}}}
""")
    return path


def run(root: Path, name: str, world: int, strategy: str, every: int = 0,
        resume: Path | None = None) -> list[dict]:
    job = spec(root, name, world, strategy, every)
    cmd = [TRAIN, "run", job] if world == 1 else [TRAIN, "launch", "--nproc", str(world), job]
    cmd += ["--json"] + (["--resume", resume] if resume else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def metrics(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "metrics"]


def adapter_of(root: Path, name: str) -> tuple[dict, dict, dict]:
    adapter = root / name / "adapter"
    return (safetensors_torch.load_file(str(adapter / "adapter_model.safetensors")),
            json.loads((adapter / "adapter_config.json").read_text()),
            json.loads((adapter / "labels.json").read_text()))


@pytest.fixture(scope="module")
def reference(workdir):
    return run(workdir, "single", 1, "single", every=8)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_classify_like_one(workdir, reference, strategy):
    events = run(workdir, f"{strategy}2", 2, strategy, every=8)
    ours, theirs = metrics(events), metrics(reference)
    assert len(ours) == len(theirs) == STEPS
    losses = torch.tensor([m["loss"] for m in ours], dtype=torch.float64)
    ref_losses = torch.tensor([m["loss"] for m in theirs], dtype=torch.float64)
    torch.testing.assert_close(losses, ref_losses, rtol=RTOL, atol=0)
    assert ref_losses[-1] < 0.7 * ref_losses[0]  # it learned: the comparison is not vacuous
    # The norm clipped at 0.5 counts the head once, summed over the ranks' rows.
    norms = torch.tensor([m["grad_norm"] for m in ours], dtype=torch.float64)
    ref_norms = torch.tensor([m["grad_norm"] for m in theirs], dtype=torch.float64)
    torch.testing.assert_close(norms, ref_norms, rtol=RTOL, atol=0)
    assert (ref_norms > 0.5).sum() >= 4  # clipping changed those steps

    # Evaluations at steps 8 and 16: sums and counts over 4 + 3 examples, as one rank's 7.
    evals = [(m["eval_loss"], m["eval_accuracy"]) for m in ours if "eval_accuracy" in m]
    ref_evals = [(m["eval_loss"], m["eval_accuracy"]) for m in theirs if "eval_accuracy" in m]
    assert len(evals) == len(ref_evals) == 2
    for (loss, accuracy), (ref_loss, ref_accuracy) in zip(evals, ref_evals):
        assert loss == pytest.approx(ref_loss, rel=RTOL)
        assert accuracy == ref_accuracy
        assert round(accuracy * 7) == pytest.approx(accuracy * 7, abs=1e-9)  # k of 7 examples

    tensors, config, labels = adapter_of(workdir, f"{strategy}2")
    ref_tensors, ref_config, ref_labels = adapter_of(workdir, "single")
    assert config == ref_config and config["modules_to_save"] == ["score"]
    assert labels == ref_labels
    assert sorted(os.listdir(workdir / f"{strategy}2" / "adapter")) == sorted(
        os.listdir(workdir / "single" / "adapter"))
    assert tensors.keys() == ref_tensors.keys()
    assert "base_model.model.score.weight" in tensors
    for key, value in ref_tensors.items():
        assert tensors[key].shape == value.shape and tensors[key].dtype == value.dtype, key
        if strategy == "ddp":
            torch.testing.assert_close(tensors[key], value, rtol=RTOL, atol=ATOL, msg=key)
        else:
            # fsdp sums the clipping norm's squares shard by shard, so its clip coefficient can
            # differ from one rank's in the last bits (ddp's sums are one rank's: compared element
            # by element above). AdamW divides each update by the gradient's running RMS, which for
            # an element whose gradient is near zero turns that last-bit difference into ~1e-3 of
            # its update: element-wise tolerances do not fit those elements. Each tensor is held
            # to its norm instead; a missed update, a stale shard or one from the wrong rank moves
            # a tensor by ~lr (1e-2) of its norm, far past this.
            error = (tensors[key] - value).norm() / value.norm()
            assert error < ADAPTER_NORM_RTOL, (key, error.item())
    # The head trained on: the final one is not the step-8 checkpoint's.
    key = "base_model.model.score.weight"
    at_8 = safetensors_torch.load_file(str(workdir / f"{strategy}2" / "checkpoints" / "step-8" /
                                           "adapter" / "adapter_model.safetensors"))[key]
    assert (tensors[key] - at_8).abs().max() > 1e-3


def test_fsdp_checkpoint_resumes_on_one_rank(workdir, reference):
    """The fsdp run's step-8 checkpoint holds the head as two shards of rows (value and AdamW
    moments): resumed on one rank it gives the uninterrupted one-rank run's last 8 losses."""
    checkpoint = workdir / "fsdp2" / "checkpoints" / "step-8"
    if not checkpoint.exists():
        run(workdir, "fsdp2", 2, "fsdp", every=8)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert manifest["shards"] == 2
    [score] = [t for t in manifest["tensors"] if t["tensor"] == "score"]
    assert score["shape"] == [len(LABELS), 64] and score["rows_per_rank"] == 2
    events = run(workdir, "fsdp_to_single", 1, "single", resume=checkpoint)
    losses = torch.tensor([m["loss"] for m in metrics(events)], dtype=torch.float64)
    ref_losses = torch.tensor([m["loss"] for m in metrics(reference)][8:], dtype=torch.float64)
    torch.testing.assert_close(losses, ref_losses, rtol=RTOL, atol=0)
