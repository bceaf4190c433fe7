"""Experiment tracking (`log_with`): both training loops feed TensorBoard the metrics of their
JSONL log, at the same steps, and their lines carry the step total and the time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgsd.data import records
from mgsd.data.generate import generate_rows
from mgsd.train import distill, sft

pytestmark = pytest.mark.slow
STEPS = 2


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory, tiny_image_size: int) -> Path:
    rows = generate_rows("maze", "train", [3], 4, 1, tiny_image_size, set(), {}, progress=False)
    return records.write_data(rows, tmp_path_factory.mktemp("track-data") / "train.parquet")


def scalars(folder: Path, key: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(key)}


def log_rows(path: Path, key: str) -> dict[int, float]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(r["total_steps"] == STEPS and r["time"] > 1.7e9 for r in rows), rows
    return {r["step"]: r[key] for r in rows if key in r}


@pytest.mark.parametrize("loop", ["train-sft", "distill"])
def test_the_loops_feed_tensorboard_the_metrics_of_their_log(
    loop, tiny_model_dir, data_file, tmp_path
):
    pytest.importorskip("tensorboard")
    common = {"steps": STEPS, "batch_size": 2, "lr": 1e-3, "val_instances": 1,
              "checkpoint_every": 0, "log_with": ["tensorboard"]}  # fmt: skip
    outputs = [
        "--train", str(data_file), "--val", str(data_file), "--out", str(tmp_path / "model"),
        "--metrics", str(tmp_path / "metrics.json"), "--log", str(tmp_path / "train_log.jsonl"),
        "--work", str(tmp_path),
    ]  # fmt: skip
    if loop == "train-sft":
        cfg, key, name = {**common, "val_max_new_tokens": 8}, "train/loss", "grounding"
        code = sft.main(
            ["--stage", "grounding", "--init", str(tiny_model_dir), "--config", json.dumps(cfg)]
            + outputs
        )
    else:
        cfg, key, name = {**common, "max_new_tokens": 8}, "distill/reverse_kl", "mgsd"
        code = distill.main(
            ["--method", "mgsd", "--init", str(tiny_model_dir), "--teacher", str(tiny_model_dir),
             "--config", json.dumps(cfg), *outputs]
        )  # fmt: skip
    assert code == 0
    logged = log_rows(tmp_path / "train_log.jsonl", key)
    assert sorted(logged) == [1, 2]
    assert scalars(tmp_path / "tracking" / name, key) == pytest.approx(logged)
