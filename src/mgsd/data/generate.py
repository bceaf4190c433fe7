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
import sys
import time

from mgsd import puzzles
from mgsd.data import records
from mgsd.data.splits import excluded_hashes, generate_rows, import_rows


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
