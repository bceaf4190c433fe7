r"""`mgsd select`: keep the candidate of a sweep with the best validation score.

    mgsd select --candidates results/R/models/mgsd/sweep/c0 results/R/models/mgsd/sweep/c1 \
        --metric val/success --keys lr --out results/R/models/mgsd

Each candidate folder holds what a training stage writes (``model/``, ``metrics.json``,
``train_log.jsonl``). The candidate with the highest `--metric` in its ``metrics.json`` wins
(a tie goes to the earlier candidate, i.e. the first value of the sweep); its files become
``<out>/model``, ``<out>/metrics.json`` and ``<out>/train_log.jsonl`` (the model folder as
hard links where the file system allows it, so no weights are copied), ``<out>/config.json`` is
the winner's stage section (what replicates of the method train with) and ``<out>/sweep.json``
lists every candidate with its swept keys and validation metrics. Only validation numbers are
read: this is how the pipeline chooses settings without looking at a test set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mgsd import cli_args
from mgsd.io import atomic_copy, link_tree, write_atomic_json
from mgsd.model.load import read_stage_info


class SelectError(ValueError):
    """A candidate folder is incomplete or lacks the metric."""


def read_candidate(folder: Path, metric: str, keys: list[str]) -> dict:
    metrics_file = folder / "metrics.json"
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, ValueError) as e:
        raise SelectError(f"cannot read {metrics_file}: {e}") from e
    if not isinstance(metrics.get(metric), (int, float)):
        have = ", ".join(k for k in metrics if k.startswith("val/")) or "none"
        raise SelectError(f"{metrics_file} has no number {metric!r} (validation keys: {have})")
    config = read_stage_info(folder / "model").get("config")
    if not isinstance(config, dict):
        raise SelectError(f"{folder / 'model'} records no stage config (mgsd_stage.json)")
    missing = [k for k in keys if k not in config]
    if missing:
        raise SelectError(f"{folder / 'model'}: its config has no key {missing[0]!r}")
    return {
        "candidate": folder.name,
        "settings": {k: config[k] for k in keys},
        "score": float(metrics[metric]),
        "validation": {k: v for k, v in metrics.items() if k.startswith("val/")},
        "config": config,
    }


def select(candidates: list[Path], metric: str, keys: list[str], out: Path) -> dict:
    rows = [read_candidate(c, metric, keys) for c in candidates]
    best = max(range(len(rows)), key=lambda i: (rows[i]["score"], -i))
    winner = candidates[best]
    link_tree(winner / "model", out / "model")
    for name in ("metrics.json", "train_log.jsonl"):
        atomic_copy(winner / name, out / name)
    write_atomic_json(out / "config.json", rows[best]["config"])
    summary = {
        "metric": metric,
        "chosen": rows[best]["candidate"],
        "settings": rows[best]["settings"],
        "candidates": [{k: v for k, v in r.items() if k != "config"} for r in rows],
    }
    write_atomic_json(out / "sweep.json", summary)
    return summary


def main(argv: list[str]) -> int:
    args = cli_args.select().parse_args(argv)
    try:
        summary = select([Path(c) for c in args.candidates], args.metric, args.keys, Path(args.out))
    except SelectError as e:
        print(f"mgsd select: {e}", file=sys.stderr)
        return 1
    for row in summary["candidates"]:
        mark = "*" if row["candidate"] == summary["chosen"] else " "
        print(
            f"{mark} {row['candidate']} {row['settings']} {summary['metric']} = {row['score']:.4f}"
        )
    return 0
