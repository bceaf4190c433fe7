r"""`mgsd generate`: build one (puzzle, split) data file.

    mgsd generate --puzzle maze --split train --levels 3 4 --per-level 300 --seed 1 \
        --image-size 64 --out results/default/data/maze/train.parquet

Generated instances come from `puzzle.generate(level, seed_i)` with a per-instance seed derived
from (split seed, puzzle, level, index); a split never repeats an instance and never contains an
instance of the files given with `--exclude` (canonical state hash). `--source vsp|vprl` imports a
public benchmark test set instead (every instance checked by `mgsd.data.benchmarks`).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time

import numpy as np
from tqdm import tqdm

from mgsd import puzzles
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
    puzzle: str, source: str, root: str, levels: list[int], image_size: int, progress: bool = True
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="mgsd generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--puzzle", required=True, choices=puzzles.NAMES)
    ap.add_argument("--split", required=True, choices=("train", "val", "test"))
    ap.add_argument("--levels", required=True, type=int, nargs="+", help="grid sides")
    ap.add_argument("--per-level", type=int, default=0, help="instances per side (generated)")
    ap.add_argument("--seed", type=int, default=0, help="split seed (generated)")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument(
        "--hole-fraction",
        type=float,
        nargs=2,
        default=None,
        help="frozenlake: low and high hole fraction",
    )
    ap.add_argument("--exclude", nargs="*", default=[], help="data files whose instances to skip")
    ap.add_argument("--source", default="generated", choices=("generated", "vsp", "vprl"))
    ap.add_argument("--benchmarks-dir", default=None, help="folder of the public benchmarks")
    ap.add_argument("--out", required=True, help="Parquet file to write")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.source == "generated" and args.per_level < 1:
        ap.error("--per-level must be >= 1 for generated data")
    if args.source != "generated" and args.split != "test":
        ap.error(f"--source {args.source} is a test set: use it with --split test")
    if args.source != "generated" and not args.benchmarks_dir:
        ap.error(f"--source {args.source} needs --benchmarks-dir")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    progress = not args.no_progress
    try:
        if args.source == "generated":
            options = {}
            if args.hole_fraction is not None and args.puzzle == "frozenlake":
                options["hole_fraction"] = tuple(args.hole_fraction)
            rows = list(
                generate_rows(
                    args.puzzle,
                    args.split,
                    args.levels,
                    args.per_level,
                    args.seed,
                    args.image_size,
                    excluded_hashes(args.exclude),
                    options,
                    progress,
                )
            )
        else:
            rows = list(
                import_rows(
                    args.puzzle,
                    args.source,
                    args.benchmarks_dir,
                    args.levels,
                    args.image_size,
                    progress,
                )
            )
            clash = excluded_hashes(args.exclude) & {r["state_hash"] for r in rows}
            if clash:
                raise ValueError(f"{len(clash)} benchmark instances also appear in {args.exclude}")
    except (ValueError, OSError, RuntimeError, records.RecordError) as e:
        print(f"mgsd generate: {e}", file=sys.stderr)
        return 1
    records.write_data(rows, args.out)
    dt = time.perf_counter() - t0
    print(
        f"wrote {len(rows)} {args.puzzle}/{args.split} instances to {args.out} "
        f"in {dt:.1f} s ({len(rows) / max(dt, 1e-9):.1f} instances/s)"
    )
    return 0
