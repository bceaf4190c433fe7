"""A training stage's command line in a child process, and a run killed mid-way then resumed:
what the resume tests of every stage share (`mgsd distill`, `mgsd rl`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mgsd.train import resume


def start_stage(stage: str, root: Path, argv: list[str]) -> subprocess.Popen:
    """`mgsd <stage> argv` in a child process on one torch thread (bit-identical reruns), its
    output appended to root/stdout.txt and root/stderr.txt."""
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(root / "stdout.txt", "a") as out, open(root / "stderr.txt", "a") as err:
        cmd = [sys.executable, "-m", "mgsd.cli", stage, *argv]
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=err)


def straight_and_killed(
    stage: str, name: str, straight: Path, killed: Path, argv: dict[Path, list[str]]
) -> None:
    """Two runs side by side: `straight` to the end; `killed` by SIGKILL as soon as its first
    checkpoint is on disk, then run again, which must resume (saying so) and end."""
    runs = {r: start_stage(stage, r, argv[r]) for r in (straight, killed)}
    victim, deadline = runs[killed], time.monotonic() + 300
    while not resume.checkpoints(killed / "work"):
        assert victim.poll() is None, (killed / "stderr.txt").read_text()
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (killed / "model").exists()  # it died before the end
    assert runs[straight].wait(timeout=300) == 0, (straight / "stderr.txt").read_text()
    resumed = start_stage(stage, killed, argv[killed])
    assert resumed.wait(timeout=300) == 0, (killed / "stderr.txt").read_text()
    assert f"resuming {name} from" in (killed / "stderr.txt").read_text()
