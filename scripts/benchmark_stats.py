"""Compare generated puzzles with the public benchmarks (difficulty statistics).

Prints, per side, the mean hole fraction and the optimal-length distribution of generated
FrozenLake maps next to the VSP maps, and the same for MiniBehaviour against the VPRL test
split (plus how often the printer touches the table and the agent touches the printer).

    python scripts/benchmark_stats.py [--benchmarks DIR] [--per-level 100] [--seed 0]

DIR defaults to $MGSD_BENCHMARKS or <repo>/../shared/benchmarks.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections import Counter
from pathlib import Path

from mgsd.data import benchmarks
from mgsd.puzzles import base, frozenlake, minibehaviour


def _lengths(states: list, module) -> str:
    counts = Counter(module.optimal_length(s) for s in states)
    mean = statistics.mean(module.optimal_length(s) for s in states)
    spread = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
    return f"d* mean {mean:4.2f} [{spread}]"


def _holes(states: list) -> str:
    fractions = [len(s.cells("H")) / s.level**2 for s in states]
    return f"holes {statistics.mean(fractions):.3f} (sd {statistics.pstdev(fractions):.3f})"


def _mb_touch(states: list) -> str:
    def touching(a: base.Pos, cells) -> bool:
        return any(abs(a[0] - q[0]) + abs(a[1] - q[1]) == 1 for q in cells)

    printer = statistics.mean(touching(s.printer, s.table) for s in states)
    agent = statistics.mean(touching(s.agent, [s.printer]) for s in states)
    return f"printer-table {printer:.2f} agent-printer {agent:.2f}"


def main(argv: list[str] | None = None) -> None:
    default = (
        os.environ.get("MGSD_BENCHMARKS")
        or Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default=str(default))
    parser.add_argument("--per-level", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    vsp = benchmarks.load_vsp_frozenlake(args.benchmarks)
    print("frozenlake: generated (hole_fraction default) vs VSP")
    for level in range(3, 9):
        ours = [frozenlake.generate(level, args.seed * 100_000 + i) for i in range(args.per_level)]
        theirs = [b.state for b in vsp if b.level == level]
        print(f"  N={level} ours {_holes(ours)} {_lengths(ours, frozenlake)}")
        print(f"      vsp  {_holes(theirs)} {_lengths(theirs, frozenlake)}")

    vprl = benchmarks.load_vprl_minibehaviour(args.benchmarks)
    print("minibehaviour: generated vs VPRL")
    for level in (5, 6):
        ours = [
            minibehaviour.generate(level, args.seed * 100_000 + i) for i in range(args.per_level)
        ]
        theirs = [b.state for b in vprl if b.level == level]
        print(f"  N={level} ours {_mb_touch(ours)} {_lengths(ours, minibehaviour)}")
        print(f"      vprl {_mb_touch(theirs)} {_lengths(theirs, minibehaviour)}")


if __name__ == "__main__":
    main()
