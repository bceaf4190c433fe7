"""Regression pins: the first losses of a tiny seeded run of every training stage (CPU).

Each stage runs three steps through its real entry point (`mgsd train-sft`, `mgsd distill`) on
the tiny scratch backbone of `conftest.py`, one thread, fixed seeds, and the logged losses must
equal the numbers below (relative 1e-4). A change in the maths of a loss, of the batching, the
prompts, the schedule or the optimizer shows up here as a number, not as a drift months later.

A deliberate change of the maths updates the pins: run this module with
``MGSD_PRINT_PINS=1 pytest -s`` and copy the printed numbers, and say why in the commit. The
numbers are those of one CPU and one thread; another CPU could differ in the last bits, which
the tolerance absorbs, except where a sampled token flips (distillation): then the pin moves
for a reason that is not the maths, and the commit says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mgsd.data import records
from mgsd.data.splits import generate_rows
from mgsd.train import distill, sft

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread_module")]
REL = 1e-4
STEPS = 3
SFT = {
    "steps": STEPS, "batch_size": 4, "lr": 3e-3, "schedule": "cosine", "warmup_ratio": 0.0,
    "checkpoint_every": 0, "val_instances": 1, "val_max_new_tokens": 4, "log_every": 1,
}  # fmt: skip
SFT_CASES = {  # name: (stage, settings over SFT)
    "symbolic_pretrain": ("symbolic_pretrain", {}),
    "grounding_lora": ("grounding", {"finetune": "lora", "lora": {"rank": 4, "alpha": 8}}),
    "sft_direct": ("sft_direct", {"grad_accum": 2}),
    "grounding_sft": ("grounding_sft", {}),
    "mix": ("symbolic_pretrain", {"mix": {"symbolic": {"weight": 0.5}, "oracle": {"weight": 0.5}}}),
}  # fmt: skip
TEACHER_STEPS = 10
DISTILL = {
    "steps": STEPS, "batch_size": 4, "max_new_tokens": 12, "temperature": 1.0, "lr": 1e-2,
    "checkpoint_every": 0, "val_instances": 1, "seed": 0,
}  # fmt: skip
DISTILL_CASES = {  # name: (loss, settings over DISTILL, extra arguments)
    "sampled_reverse_kl": ("sampled_reverse_kl", {}, ["--teacher-sees-plan"]),
    "sampled_stabilised": (
        "sampled_reverse_kl",
        {"kl_baseline": True, "dual_clip": 3.0, "forward_kl_weight": 0.5, "samples_per_prompt": 2},
        [],
    ),
    "full_reverse_kl": ("full_reverse_kl", {}, []),
}

# train/loss of steps 1-3
SFT_PINS: dict[str, list[float]] = {
    "symbolic_pretrain": [5.9381901, 5.5959872, 5.3380576],
    "grounding_lora": [5.941167, 5.9106883, 5.867538],
    "sft_direct": [5.9370301, 5.5918503, 5.3328663],
    "grounding_sft": [5.9370301, 5.5918492, 5.3328658],
    "mix": [5.9498447, 5.5986918, 5.3559962],
}
# (distill/loss, distill/reverse_kl) of steps 1-3
DISTILL_PINS: dict[str, list[tuple[float, float]]] = {
    "sampled_reverse_kl": [(1.5204779, 1.5204779), (1.6364208, 1.6364208), (1.2843709, 1.2843709)],
    "sampled_stabilised": [(3.0870919, 1.1933676), (2.9122624, 1.1713055), (2.3734396, 0.88538831)],
    "full_reverse_kl": [(1.0716714, 1.0716714), (0.96582526, 0.96582526), (0.56070942, 0.56070942)],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_image_size) -> Path:
    """8 instances: the three puzzles, sides 3 to 5, data seed 1."""
    rows = []
    for puzzle, levels, n in (
        ("frozenlake", [3, 4], 2),
        ("maze", [3], 2),
        ("minibehaviour", [5], 2),
    ):
        rows += generate_rows(puzzle, "train", levels, n, 1, tiny_image_size, set(), {}, False)
    return records.write_data(rows, tmp_path_factory.mktemp("pins") / "train.parquet")


def outputs(root: Path) -> list[str]:
    return [
        "--out", str(root / "model"), "--metrics", str(root / "metrics.json"),
        "--log", str(root / "train_log.jsonl"), "--work", str(root / "work"),
    ]  # fmt: skip


def log_rows(root: Path, key: str) -> list[dict]:
    lines = (root / "train_log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if key in r]


def check(name: str, got: list, pins: dict) -> None:
    if os.environ.get("MGSD_PRINT_PINS"):
        print(f"\n    {name!r}: {got!r},")
    assert name in pins, f"no pin for {name}: {got}"
    flat = [v for row in got for v in (row if isinstance(row, tuple) else (row,))]
    want = [v for row in pins[name] for v in (row if isinstance(row, tuple) else (row,))]
    assert flat == pytest.approx(want, rel=REL), (name, got)


@pytest.mark.parametrize("name", list(SFT_CASES))
def test_first_sft_losses_are_pinned(name, tiny_model_dir, data, tmp_path):
    stage, settings = SFT_CASES[name]
    cfg = {**SFT, **settings}
    argv = ["--stage", stage, "--init", str(tiny_model_dir), "--train", str(data),
            "--val", str(data), "--config", json.dumps(cfg), *outputs(tmp_path)]  # fmt: skip
    assert sft.main(argv) == 0
    rows = log_rows(tmp_path, "train/loss")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    check(name, [r["train/loss"] for r in rows], SFT_PINS)


@pytest.fixture(scope="module")
def teacher_dir(tiny_model_dir, data, tmp_path_factory) -> Path:
    """The tiny backbone after a few steps of symbolic_pretrain: a teacher that disagrees with
    the untrained student from the first step."""
    root = tmp_path_factory.mktemp("pins-teacher")
    cfg = {**SFT, "steps": TEACHER_STEPS, "lr": 1e-2, "val_instances": 0}
    argv = ["--stage", "symbolic_pretrain", "--init", str(tiny_model_dir), "--train", str(data),
            "--val", str(data), "--config", json.dumps(cfg), *outputs(root)]  # fmt: skip
    assert sft.main(argv) == 0
    return root / "model"


@pytest.mark.parametrize("name", list(DISTILL_CASES))
def test_first_distillation_losses_are_pinned(name, tiny_model_dir, teacher_dir, data, tmp_path):
    """The untrained backbone (student, picture prompt) distils from `teacher_dir` (text)."""
    loss, settings, extra = DISTILL_CASES[name]
    cfg = {**DISTILL, **settings}
    argv = ["--method", "pins", "--init", str(tiny_model_dir), "--teacher", str(teacher_dir),
            "--train", str(data), "--val", str(data), "--config", json.dumps(cfg),
            "--loss", loss, *outputs(tmp_path), *extra]  # fmt: skip
    assert distill.main(argv) == 0
    rows = log_rows(tmp_path, "distill/reverse_kl")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    got = [(r["distill/loss"], r["distill/reverse_kl"]) for r in rows]
    check(name, got, DISTILL_PINS)
