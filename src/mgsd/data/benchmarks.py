"""Import the public benchmark test sets as puzzle states (library functions, no CLI).

- `load_vsp_frozenlake(root)`: the VSP FrozenLake maps, ``root/vsp_frozenlake/levelN/table/K.txt``
  (a Markdown table: ``@`` player, ``*`` goal, ``#`` hole, ``_`` ice) with their pictures
  ``levelN/img/K.png``. Each map must be solvable and our native render must equal its PNG
  pixel for pixel.
- `load_vprl_minibehaviour(root)`: the VisualPlanning MiniBehaviour test split,
  ``root/vprl_minibehaviour/test.jsonl``. Our optimal length must equal the length of the
  recorded optimal trajectory, the trajectory must replay as a legal successful plan in our
  simulator, and the recorded printer / table neighbour cells must be the cells where our
  rules allow a pick / a drop.

Every problem raises an error naming the file (and line) at fault. The benchmarks are inputs
only: they are read from the configured folder, never copied into the repository.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mgsd.puzzles import base, frozenlake, minibehaviour

VSP_LETTERS = {"@": "S", "*": "G", "#": "H", "_": "F"}


@dataclass(frozen=True)
class BenchmarkInstance:
    id: str  # vsp-frozenlake-level3-17, vprl-minibehaviour-0
    puzzle: str
    level: int
    state: Any  # the puzzle module's State
    source: str  # vsp or vprl
    image_png: bytes | None  # the benchmark's picture (vsp); None when we render it (vprl)


def _folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"cannot read {path}: {e.strerror}") from e


# ---------------------------------------------------------------- VSP FrozenLake


def parse_vsp_table(text: str) -> list[str]:
    """The grid rows (S F H G letters) of a VSP Markdown table; ValueError on a bad table."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines[1:], start=1):  # line 0 is the column header
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not re.fullmatch(r"Row \d+", cells[0]):
            raise ValueError(f"table line {i + 1}: expected 'Row N' first, got {cells[0]!r}")
        bad = [c for c in cells[1:] if c not in VSP_LETTERS]
        if bad:
            raise ValueError(f"table line {i + 1}: unknown cell {bad[0]!r}")
        rows.append("".join(VSP_LETTERS[c] for c in cells[1:]))
    return rows


def _vsp_levels(folder: Path, levels: list[int] | None) -> list[int]:
    if levels is not None:
        return sorted(levels)
    found = [
        int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"level(\d+)", p.name))
    ]
    if not found:
        raise FileNotFoundError(f"no levelN folders in {folder}")
    return sorted(found)


def load_vsp_frozenlake(
    root: str | Path, levels: list[int] | None = None
) -> list[BenchmarkInstance]:
    """All VSP FrozenLake maps of `levels` (default: every levelN folder), by level then index."""
    folder = _folder(Path(root) / "vsp_frozenlake", "VSP FrozenLake")
    out = []
    for level in _vsp_levels(folder, levels):
        tables = _folder(folder / f"level{level}" / "table", "VSP FrozenLake level")
        names = sorted(
            (p for p in tables.glob("*.txt") if p.stem.isdigit()), key=lambda p: int(p.stem)
        )
        if not names:
            raise FileNotFoundError(f"no K.txt maps in {tables}")
        for table in names:
            png_path = folder / f"level{level}" / "img" / f"{table.stem}.png"
            try:
                grid = parse_vsp_table(_read_bytes(table).decode())
                state = frozenlake.from_dict({"level": level, "grid": grid})
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"{table}: {e}") from e
            png = _read_bytes(png_path)
            try:
                picture_HW3 = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            except OSError as e:
                raise ValueError(f"{png_path}: not a readable PNG ({e})") from e
            ours_HW3 = frozenlake.render_native(state)
            if picture_HW3.shape != ours_HW3.shape or (picture_HW3 != ours_HW3).any():
                raise ValueError(f"{png_path}: our render of {table.name} differs from the picture")
            out.append(
                BenchmarkInstance(
                    f"vsp-frozenlake-level{level}-{table.stem}",
                    "frozenlake",
                    level,
                    state,
                    "vsp",
                    png,
                )
            )
    return out


# ---------------------------------------------------------------- VPRL MiniBehaviour


def trajectory_actions(trajectory: list) -> list[str]:
    """Actions between consecutive ``[[row, col], carrying]`` states of a VPRL trajectory."""
    moves = {delta: a for a, delta in base.MOVES.items()}
    actions = []
    for (p, carry), (q, carry_next) in zip(trajectory, trajectory[1:], strict=False):
        delta = (q[0] - p[0], q[1] - p[1])
        if delta == (0, 0) and carry != carry_next:
            actions.append("PICK" if carry_next else "DROP")
        elif delta in moves and carry == carry_next:
            actions.append(moves[delta])
        else:
            raise ValueError(f"no single action leads from {[p, carry]} to {[q, carry_next]}")
    return actions


def _check_vprl_row(row: dict, state: minibehaviour.State) -> None:
    trajectory = row["optimal_trajectory"]
    d_star = minibehaviour.optimal_length(state)
    if d_star != len(trajectory) - 1:
        raise ValueError(f"our optimal length {d_star} != trajectory length {len(trajectory) - 1}")
    actions = trajectory_actions(trajectory)
    sim = minibehaviour.simulate(state, actions)
    if not (sim.success and sim.executed == len(actions)):
        raise ValueError(f"the optimal trajectory {actions} does not replay: {sim}")
    n, table = state.level, set(state.table)
    picks = set(base.neighbours(state.printer, n)) - table
    drops = {q for t in table for q in base.neighbours(t, n)} - table
    for key, ours in (("printer_neighbors", picks), ("table_neighbors", drops)):
        if {tuple(p) for p in row[key]} != ours:
            raise ValueError(f"{key} {row[key]} differs from ours {sorted(ours)}")


def load_vprl_minibehaviour(
    root: str | Path, levels: list[int] | None = None
) -> list[BenchmarkInstance]:
    """The VPRL MiniBehaviour test instances of `levels` (default all), in file order."""
    path = Path(root) / "vprl_minibehaviour" / "test.jsonl"
    try:
        text = _read_bytes(path).decode()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e
    out, seen = [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            canonical = {
                "level": row["level"],
                "agent": row["start_pos"],
                "printer": row["printer_pos"],
                "table": row["table_pos"],
            }
            if levels is not None and row["level"] not in levels:
                continue
            state = minibehaviour.from_dict(canonical)
            _check_vprl_row(row, state)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} line {number}: {type(e).__name__}: {e}") from e
        name = f"vprl-minibehaviour-{row.get('index', number - 1)}"
        if name in seen:
            raise ValueError(f"{path} line {number}: duplicate id {name}")
        seen.add(name)
        out.append(BenchmarkInstance(name, "minibehaviour", state.level, state, "vprl", None))
    return out
