"""`mgsd progress`: where each stage of a run stands, read from synthetic training logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mgsd.report import progress as P

SRC = Path(__file__).resolve().parents[2] / "src"
NOW = time.time()


def write_log(path: Path, rows: list[dict], age_s: float, tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    os.utime(path, (NOW - age_s, NOW - age_s))  # when the log last grew


def sft_rows(steps, total, t0, every_s, key="train/loss"):
    return [
        {"step": s, "total_steps": total, "time": t0 + i * every_s, key: 1.0 / s}
        for i, s in enumerate(steps)
    ]


def make_run(root: Path) -> Path:
    run = root / "results" / "default"
    base = sft_rows(range(1, 11), 10, NOW - 7200, 60)
    write_log(run / "models/base/train_log.jsonl", base, 6000)
    write_log(run / "resume/base/train_log.jsonl", base, 6000)  # the live log stays: base is done
    c0 = sft_rows(range(1, 5), 4, NOW - 5000, 10)
    write_log(run / "models/grounding/sweep/c0/train_log.jsonl", c0, 4900)
    # a candidate resumed an hour after its first 10 steps, then 2 s a step: 70 steps to go
    c1 = sft_rows(range(1, 11), 100, NOW - 4000, 2) + sft_rows(range(11, 31), 100, NOW - 45, 2)
    write_log(run / "resume/grounding/c1/train_log.jsonl", c1, 5, tail='{"step": 31, "tra')
    kl = sft_rows(range(1, 6), 80, NOW - 3700, 20, key="distill/reverse_kl")
    write_log(run / "resume/mgsd/train_log.jsonl", kl, 3600)  # stopped an hour ago
    old = [{"step": s, "train/loss": 0.5} for s in (1, 2, 3)]  # a log without time or total
    write_log(run / "resume/sft_direct/train_log.jsonl", old, 10)
    return run


def test_each_started_stage_with_its_step_latest_value_and_eta(tmp_path):
    run = make_run(tmp_path)
    stages = {s.name: s for s in P.progress(run, now=NOW)}
    assert list(stages) == ["base", "grounding/c0", "grounding/c1", "mgsd", "sft_direct"]
    base, c0, c1, mgsd, old = (stages[n] for n in ("base", "grounding/c0", "grounding/c1",
                                                    "mgsd", "sft_direct"))  # fmt: skip
    assert (base.state, base.step, base.total, base.latest) == ("done", 10, 10, "loss 0.1")
    assert c0.state == "done" and P.eta(c0) == "-"
    assert (c1.state, c1.step, c1.total, c1.latest) == ("running", 30, 100, "loss 0.03333")
    assert c1.pace_s == 2.0 and P.eta(c1) == "2 min"  # the pause before the resume is left out
    assert (mgsd.state, mgsd.step, mgsd.total, mgsd.latest) == ("idle", 5, 80, "KL 0.2")
    assert P.eta(mgsd) == "- (no new step for 1 h 00 min)"
    assert (old.state, old.step, old.total, P.eta(old)) == ("running", 3, None, "?")


def test_the_command_prints_a_table_without_torch(tmp_path):
    run = make_run(tmp_path)
    code = (
        "import sys\nfrom mgsd import cli\n"
        f"code = cli.main(['progress', {str(run)!r}])\n"
        "print('torch' in sys.modules, code)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "False 0"
    assert lines[0].split() == ["stage", "state", "step", "latest", "ETA"]
    c1 = next(line for line in lines if line.startswith("grounding/c1"))
    assert c1.split()[1:3] == ["running", "30/100"] and c1.rstrip().endswith("min")


def test_an_empty_run_and_a_missing_folder(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert P.main([str(tmp_path / "run")]) == 0
    assert "no training stage has started" in capsys.readouterr().out
    assert P.main([str(tmp_path / "nowhere")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_durations_read_as_people_write_them():
    assert [P.duration(s) for s in (45, 150, 3600, 3 * 3600 + 5 * 60)] == [
        "45 s", "2 min", "1 h 00 min", "3 h 05 min",
    ]  # fmt: skip
