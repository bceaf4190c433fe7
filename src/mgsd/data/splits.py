"""The instances of one (puzzle, split) as data rows: generated, or a public benchmark imported.

Library functions (`mgsd generate` is their command line; `mgsd evaluate --benchmarks-dir` reads
the public test sets through `public_test_rows`):

- `generate_rows`: instances from `puzzle.generate(level, seed_i)` with a per-instance seed
  derived from (split seed, puzzle, level, index) (`instance_seed`); a split never repeats an
  instance and never holds one whose canonical state hash is excluded.
- `import_rows`: a public benchmark test set (`vsp`, `vprl`), every instance checked by
  `mgsd.data.benchmarks`.
- `public_test_rows`: the test set a paper reports on, per puzzle (`PUBLIC_TEST_SETS`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mgsd import puzzles
from mgsd.config import Seeds
from mgsd.data import records

PUZZLE_IDS = {name: i for i, name in enumerate(puzzles.NAMES)}
MAX_TRIES_PER_INSTANCE = 200


def instance_seed(split_seed: int, puzzle: str, level: int, index: int) -> int:
    """A 63-bit seed that depends on every coordinate of the instance."""
    seq = np.random.SeedSequence([split_seed, PUZZLE_IDS[puzzle], level, index])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def make_row(
    puzzle: str, split: str, ident: str, level: int, seed: int, source: str, state, image_size: int
) -> dict:
    p = puzzles.get(puzzle)
    plan = p.solve(state)
    return {
        "id": ident,
        "puzzle": puzzle,
        "split": split,
        "level": level,
        "seed": seed,
        "source": source,
        "state": json.dumps(p.to_dict(state), sort_keys=True),
        "state_hash": p.state_hash(state),
        "image": png_bytes(p.render(state, size=image_size)),
        "solution": p.format_answer(plan),
        "optimal_length": len(plan),
    }


def excluded_hashes(paths: list[str]) -> set[str]:
    hashes: set[str] = set()
    for path in paths:
        hashes.update(r["state_hash"] for r in records.read_data(path, columns=["state_hash"]))
    return hashes


def generate_rows(
    puzzle: str,
    split: str,
    levels: list[int],
    per_level: int,
    seed: int,
    image_size: int,
    exclude: set[str],
    options: dict,
    progress: bool = True,
):
    p = puzzles.get(puzzle)
    seen = set(exclude)
    bar = tqdm(
        total=per_level * len(levels),
        desc=f"{puzzle}/{split}",
        unit="inst",
        disable=not progress,
        mininterval=1.0,
    )
    for level in levels:
        made, index = 0, 0
        while made < per_level:
            if index >= per_level * MAX_TRIES_PER_INSTANCE:
                raise RuntimeError(
                    f"{puzzle} side {level}: only {made} distinct instances of {per_level} after "
                    f"{index} draws (too few distinct states at this side once the excluded "
                    f"splits are removed); lower {puzzle}'s *_per_level or drop side {level}"
                )
            s = instance_seed(seed, puzzle, level, index)
            index += 1
            state = p.generate(level, s, **options)
            h = p.state_hash(state)
            if h in seen:
                continue
            seen.add(h)
            ident = f"{puzzle}-{split}-{level}-{made:05d}"
            yield make_row(puzzle, split, ident, level, s, "generated", state, image_size)
            made += 1
            bar.update()
    bar.close()


def import_rows(
    puzzle: str,
    source: str,
    root: str,
    levels: list[int] | None,
    image_size: int,
    progress: bool = True,
):
    from mgsd.data import benchmarks

    loader = {"vsp": benchmarks.load_vsp_frozenlake, "vprl": benchmarks.load_vprl_minibehaviour}
    if source not in loader:
        raise ValueError(f"unknown benchmark source {source!r} (vsp, vprl)")
    instances = loader[source](root, levels=levels)
    for inst in tqdm(
        instances, desc=f"{puzzle}/test ({source})", disable=not progress, mininterval=1.0
    ):
        if inst.puzzle != puzzle:
            raise ValueError(f"{inst.id}: a {inst.puzzle} instance, expected {puzzle}")
        yield make_row(puzzle, "test", inst.id, inst.level, -1, source, inst.state, image_size)


# The public test sets, per puzzle: (source, sides). FrozenLake: VSP's maps; MiniBehaviour:
# VisualPlanning's test split; Maze: VisualPlanning's split is not public, so it is generated
# with its protocol (sides 3-6, 250 per side) from the reserved test seed.
PUBLIC_TEST_SETS = {
    "frozenlake": ("vsp", None),
    "maze": ("generated", (3, 4, 5, 6)),
    "minibehaviour": ("vprl", None),
}
PUBLIC_MAZE_PER_LEVEL = 250


def public_test_rows(
    puzzle: str, benchmarks_dir: str | Path, image_size: int, progress: bool = True
) -> list[dict]:
    """The rows of `puzzle`'s public test set (`PUBLIC_TEST_SETS`): imported from
    `benchmarks_dir`, or generated (maze) with the test seed of the default configuration."""
    source, levels = PUBLIC_TEST_SETS[puzzle]
    if source == "generated":
        rows = generate_rows(
            puzzle, "test", list(levels), PUBLIC_MAZE_PER_LEVEL, Seeds().test, image_size,
            set(), {}, progress,
        )  # fmt: skip
        return list(rows)
    return list(import_rows(puzzle, source, str(benchmarks_dir), levels, image_size, progress))
