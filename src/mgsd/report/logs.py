"""Training logs (``train_log.jsonl``) as tables: what the figures and the training table read."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd


def load_train_logs(paths: Iterable[str | Path]) -> dict[str, pd.DataFrame]:
    """{method: one row per step} from train_log.jsonl files (method = the file's folder name).

    Lines of the same step are merged (the last value of each key wins), since a resumed run
    logs again the steps after its last checkpoint. Raises ValueError naming the file and line.
    """
    logs: dict[str, pd.DataFrame] = {}
    for path in map(Path, paths):
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise ValueError(f"cannot read training log {path}: {e.strerror}") from e
        rows = []
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError(f"{path}:{i}: expected a JSON object with a 'step' key")
            rows.append(row)
        frame = pd.DataFrame(rows)
        if len(frame):
            frame = frame.groupby("step", sort=True).last().reset_index()
        label = path.parent.name
        if path.parent.parent.name == "sweep":  # models/<method>/sweep/<candidate>/
            label = f"{path.parent.parent.parent.name}/{label}"
        name, k = label, 2
        while name in logs:
            name, k = f"{label} #{k}", k + 1
        logs[name] = frame
    return logs
