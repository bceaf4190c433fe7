"""`mgsd equal-time`: step times from training logs, and clear errors before anything is written.

The whole path (a finished run, the second run planned and trained) is tested for real in
tests/workflow/test_sweep_pipeline.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mgsd import equal_time

REPO = Path(__file__).resolve().parents[2]


def write_log(path: Path, times: list[float], total: int | None = None) -> Path:
    """An on-policy log: timed steps, a validation row without timings at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    total = total or len(times)
    rows = [
        {"step": k + 1, "total_steps": total, "time": t, "perf/sample_s": 0.5, "rl/reward": 0.0}
        for k, t in enumerate(times)
    ]
    rows.append({"step": len(times), "total_steps": total, "time": times[-1] + 60.0,
                 "val/success": 0.5})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_seconds_per_step_leaves_out_the_first_step_and_the_validation(tmp_path):
    # each step logs the time it ended: from the first to the last row are steps 2 to 5, so
    # the first step (start-up, compilation) never counts, nor the validation after the last
    log = write_log(tmp_path / "log.jsonl", [100.0, 102.0, 104.0, 106.0, 108.0], total=5)
    assert equal_time.seconds_per_step(log) == (pytest.approx(2.0), 5)


@pytest.mark.parametrize(
    "text, needle",
    [("", "fewer than two"), ("{not json\n", "cannot read"), (None, "cannot read")],
)
def test_an_unusable_log_is_named(tmp_path, text, needle):
    log = tmp_path / "log.jsonl"
    if text is not None:
        log.write_text(text)
    with pytest.raises(equal_time.EqualTimeError, match=needle) as e:
        equal_time.seconds_per_step(log)
    assert str(log) in str(e.value)


def first_run(tmp_path: Path) -> list[str]:
    """A finished-looking first run: mgsd with 2 seeds at 3 s/step, grpo at 2 s/step."""
    over = tmp_path / "run.yaml"
    over.write_text(yaml.safe_dump({"run": "r", "replicates": {"mgsd": 2}}))
    root = tmp_path / "results" / "r" / "models"
    (root / "grounding" / "model").mkdir(parents=True)
    (root / "grounding" / "model" / "weights").write_text("w")
    write_log(root / "mgsd" / "train_log.jsonl", [0.0, 3.0, 6.0, 9.0])
    write_log(root / "mgsd-seed1" / "train_log.jsonl", [0.0, 3.0, 6.0, 9.0])
    write_log(root / "grpo" / "train_log.jsonl", [0.0, 2.0, 4.0, 6.0])
    return [str(REPO / "pipeline_config.yaml"), str(over)]


def test_the_second_run_gets_the_steps_of_mgsds_time(tmp_path, capsys):
    files = first_run(tmp_path)
    assert equal_time.main([*files, "--dir", str(tmp_path)]) == 0
    root2 = tmp_path / "results" / "r_equal_time"
    assert json.loads((root2 / "equal_time.json").read_text())["steps"] == 6  # 4 x 3 / 2
    cfg = yaml.safe_load((root2 / "equal_time.yaml").read_text())
    assert cfg["rl"]["steps"] == 6 and cfg["run"] == "r_equal_time" and cfg["sweep"] == {}
    assert "grpo" in cfg["methods"] and "sft_direct" not in cfg["methods"]
    assert (root2 / "models" / "grounding" / "model" / "weights").read_text() == "w"
    assert "rl.steps = 6" in capsys.readouterr().out


def test_steps_can_be_given(tmp_path):
    files = first_run(tmp_path)
    assert equal_time.main([*files, "--dir", str(tmp_path), "--steps", "9", "--run", "s"]) == 0
    cfg = yaml.safe_load((tmp_path / "results" / "s" / "equal_time.yaml").read_text())
    assert cfg["rl"]["steps"] == 9


def test_a_missing_log_is_named_and_nothing_is_written(tmp_path, capsys):
    files = first_run(tmp_path)
    log = tmp_path / "results" / "r" / "models" / "mgsd-seed1" / "train_log.jsonl"
    log.unlink()
    assert equal_time.main([*files, "--dir", str(tmp_path)]) == 1
    assert "mgsd-seed1/train_log.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "results" / "r_equal_time").exists()


def test_a_run_without_grpo_is_refused(tmp_path, capsys):
    files = first_run(tmp_path)
    over = tmp_path / "no_grpo.yaml"
    over.write_text(yaml.safe_dump({"methods": ["base", "grounding", "mgsd"]}))
    assert equal_time.main([*files, str(over), "--dir", str(tmp_path)]) == 1
    assert "no grpo" in capsys.readouterr().err


def test_a_failure_while_linking_leaves_no_second_run(tmp_path, monkeypatch):
    files = first_run(tmp_path)

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(equal_time, "link_file", broken)
    (tmp_path / "results" / "r" / "models" / "grounding" / "metrics.json").write_text("{}")
    with pytest.raises(OSError, match="No space"):
        equal_time.prepare(files, tmp_path, None, None)
    assert not (tmp_path / "results" / "r_equal_time").exists()
