"""`mgsd select`: the best validation score wins, ties go to the first candidate, files move."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgsd.train import select


def candidate(root: Path, name: str, score: float, lr: float) -> Path:
    folder = root / name
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "weights.safetensors").write_bytes(name.encode())
    (folder / "model" / "mgsd_stage.json").write_text(json.dumps({"config": {"lr": lr}}))
    (folder / "metrics.json").write_text(json.dumps({"val/success": score, "seconds": 1.0}))
    (folder / "train_log.jsonl").write_text(json.dumps({"step": 1, "name": name}) + "\n")
    return folder


def test_the_best_validation_score_wins_and_ties_go_to_the_first(tmp_path):
    cands = [candidate(tmp_path, f"c{i}", s, lr) for i, (s, lr) in enumerate(
        [(0.25, 1e-4), (0.5, 3e-4), (0.5, 1e-3)]
    )]  # fmt: skip
    out = tmp_path / "method"
    assert select.main([
        "--candidates", *map(str, cands), "--keys", "lr", "--out", str(out)
    ]) == 0  # fmt: skip
    assert (out / "model" / "weights.safetensors").read_bytes() == b"c1"
    assert json.loads((out / "config.json").read_text()) == {"lr": 3e-4}
    assert json.loads((out / "train_log.jsonl").read_text())["name"] == "c1"
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["chosen"] == "c1" and sweep["settings"] == {"lr": 3e-4}
    assert [c["score"] for c in sweep["candidates"]] == [0.25, 0.5, 0.5]
    # hard links where the file system allows: the winner's weights are not copied
    assert (out / "model" / "weights.safetensors").stat().st_ino == (
        cands[1] / "model" / "weights.safetensors"
    ).stat().st_ino
    # a rerun replaces the folder whole
    (cands[2] / "metrics.json").write_text(json.dumps({"val/success": 0.9}))
    assert select.main(["--candidates", *map(str, cands), "--out", str(out)]) == 0
    assert (out / "model" / "weights.safetensors").read_bytes() == b"c2"


def test_a_candidate_without_the_metric_is_named(tmp_path, capsys):
    good = candidate(tmp_path, "c0", 0.1, 1e-4)
    bad = candidate(tmp_path, "c1", 0.2, 1e-3)
    (bad / "metrics.json").write_text(json.dumps({"val/loss": 1.0}))
    assert select.main(["--candidates", str(good), str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert f"{bad / 'metrics.json'} has no number 'val/success'" in err and "val/loss" in err
    assert not (tmp_path / "o" / "model").exists()
    with pytest.raises(select.SelectError, match="no key 'warmup'"):
        select.select([good], "val/success", ["warmup"], tmp_path / "o")
