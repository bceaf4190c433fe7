"""`mgsd progress results/<run>`: where each training stage of a run stands, from its logs.

    mgsd progress results/default
    watch -n 30 mgsd progress results/default

One line per stage that has started: its step out of its total, its latest loss (supervised
stages) or reverse KL (distillation), and, while it runs, an ETA from the pace of its latest
steps. A stage is `running` while its live log (``resume/<model>/train_log.jsonl``,
``resume/<model>/<candidate>/`` in a sweep) grows, `idle` when it has not grown for a while
(stopped, failed or killed: its job log in ``logs/models/`` says which), and `done` once its log
is in ``models/<model>/``. Only the logs are read (never torch), so it answers at once, also
while the jobs run on other machines of a cluster.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOG = "train_log.jsonl"
# what a stage's latest line is summed up by: supervised loss, distillation's reverse KL, or RL's
# mean reward
LATEST = (("train/loss", "loss"), ("distill/reverse_kl", "KL"), ("rl/reward", "reward"))
PACE_WINDOW = 20  # the latest steps the pace is measured on
IDLE_AFTER_S = 600  # a live log that has not grown for this long (or 20 steps) is idle


@dataclass(frozen=True)
class Stage:
    name: str  # the model's folder: base, grounding, mgsd-seed1, grounding/c0 (a candidate)
    state: str  # running, idle or done
    step: int
    total: int | None
    latest: str  # e.g. "loss 0.5123", or "" before the first training step
    started: float | None  # time of the first line (seconds since the epoch)
    pace_s: float | None  # seconds per step over the latest steps
    quiet_s: float  # seconds since the log last grew


def read_rows(path: Path) -> list[dict]:
    """The lines of a training log that are JSON objects with a step (a line cut by a kill, or
    being written, is skipped)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def pace(rows: list[dict]) -> float | None:
    """Seconds per step over the latest `PACE_WINDOW` timed steps, after the last long pause in
    them (a resume, a wait for a node), or None without two timed steps."""
    timed = sorted(
        {r["step"]: r["time"] for r in rows if isinstance(r.get("time"), (int, float))}.items()
    )[-PACE_WINDOW - 1 :]
    if len(timed) < 2:
        return None
    gaps = [(t1 - t0) / max(s1 - s0, 1) for (s0, t0), (s1, t1) in itertools.pairwise(timed)]
    usual = statistics.median(gaps)
    for i in range(len(gaps) - 1, -1, -1):
        if gaps[i] > max(60.0, 20 * usual):
            timed = timed[i + 1 :]
            break
    (s0, t0), (s1, t1) = timed[0], timed[-1]
    return (t1 - t0) / (s1 - s0) if s1 > s0 else None


def summarise(name: str, path: Path, done: bool, now: float) -> Stage:
    rows = read_rows(path)
    step = max((r["step"] for r in rows), default=0)
    totals = [r["total_steps"] for r in rows if isinstance(r.get("total_steps"), int)]
    latest = next(
        (f"{label} {row[key]:.4g}" for row in reversed(rows) for key, label in LATEST
         if isinstance(row.get(key), (int, float))),
        "",
    )  # fmt: skip
    times = [r["time"] for r in rows if isinstance(r.get("time"), (int, float))]
    last_write = max([path.stat().st_mtime, *times[-1:]])
    per_step = pace(rows)
    quiet = max(0.0, now - last_write)
    state = "done" if done else "running"
    if not done and quiet > max(IDLE_AFTER_S, 20 * (per_step or 0)):
        state = "idle"
    total = totals[-1] if totals else None
    return Stage(name, state, step, total, latest, times[0] if times else None, per_step, quiet)


def find_logs(run_dir: Path) -> dict[str, tuple[Path, bool]]:
    """{stage name: (its log, done)}: the finished logs under models/, and the live ones under
    resume/ of the stages not finished."""
    found: dict[str, tuple[Path, bool]] = {}
    for pattern in (f"models/*/{LOG}", f"models/*/sweep/*/{LOG}"):
        for path in run_dir.glob(pattern):
            parts = path.relative_to(run_dir / "models").parts[:-1]
            found["/".join(p for p in parts if p != "sweep")] = (path, True)
    for pattern in (f"resume/*/{LOG}", f"resume/*/*/{LOG}"):
        for path in run_dir.glob(pattern):
            name = "/".join(path.relative_to(run_dir / "resume").parts[:-1])
            found.setdefault(name, (path, False))
    return found


def progress(run_dir: str | Path, now: float | None = None) -> list[Stage]:
    """Every started stage of the run in `run_dir`, in the order they started."""
    now = time.time() if now is None else now
    run_dir = Path(run_dir)
    stages = [summarise(n, p, done, now) for n, (p, done) in find_logs(run_dir).items()]
    return sorted(stages, key=lambda s: (s.started is None, s.started or 0.0, s.name))


def duration(seconds: float) -> str:
    """45 s, 12 min, 3 h 05 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def eta(s: Stage) -> str:
    if s.state == "done":
        return "-"
    if s.state == "idle":
        return f"- (no new step for {duration(s.quiet_s)})"
    if s.pace_s is None or s.total is None:
        return "?"
    return duration(s.pace_s * max(s.total - s.step, 0))


def table(stages: list[Stage]) -> str:
    rows = [("stage", "state", "step", "latest", "ETA")]
    rows += [
        (s.name, s.state, f"{s.step}/{s.total if s.total is not None else '?'}", s.latest, eta(s))
        for s in stages
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="mgsd progress",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("run", help="the run's folder, results/<run>")
    args = ap.parse_args(argv)
    run_dir = Path(args.run)
    if not run_dir.is_dir():
        print(f"mgsd progress: {run_dir} is not a folder (give results/<run>)", file=sys.stderr)
        return 1
    stages = progress(run_dir)
    if not stages:
        print(f"{run_dir}: no training stage has started (no {LOG} under models/ or resume/)")
        return 0
    print(table(stages))
    return 0
