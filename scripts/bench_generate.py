"""Instances per second per core of `mgsd generate`, PNG encoding and Parquet writing included.

    python scripts/bench_generate.py            # frozenlake 8, maze 6, minibehaviour 6
    python scripts/bench_generate.py --n 500 --image-size 256

Runs `mgsd.data.splits.generate_rows` in this one process (one core) for each (puzzle, side)
and prints a Markdown table; the numbers go to docs/performance.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from mgsd.data import records, splits

CASES = (("frozenlake", 8), ("maze", 6), ("minibehaviour", 6))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=300, help="instances per case")
    ap.add_argument("--image-size", type=int, default=256)
    args = ap.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    print("| puzzle | side | instances | seconds | instances/s/core |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for puzzle, side in CASES:
            t0 = time.perf_counter()
            rows = list(
                splits.generate_rows(
                    puzzle,
                    "train",
                    [side],
                    args.n,
                    seed=1,
                    image_size=args.image_size,
                    exclude=set(),
                    options={},
                    progress=False,
                )
            )
            records.write_data(rows, Path(tmp) / f"{puzzle}.parquet")
            dt = time.perf_counter() - t0
            print(f"| {puzzle} | {side} | {len(rows)} | {dt:.2f} | {len(rows) / dt:.0f} |")


if __name__ == "__main__":
    main()
