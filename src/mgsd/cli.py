"""`mgsd <stage> ...`: one subcommand per pipeline stage.

Each stage lives in its own module with a ``main(argv) -> int``; this file only dispatches, so
that `mgsd --help` stays fast (no torch import) and stage modules stay leaves.
"""

from __future__ import annotations

import importlib
import sys

STAGES = {
    "generate": (
        "mgsd.data.generate",
        "build one (puzzle, split) Parquet file (generated, or a checked benchmark import)",
    ),
    "build-scratch": (
        "mgsd.model.build_cli",
        "a scratch Qwen3-VL backbone with an offline processor",
    ),
    "train-sft": (
        "mgsd.train.sft",
        "supervised stages: symbolic_pretrain, grounding, sft_direct, grounding_sft",
    ),
    "distill": ("mgsd.train.distill", "on-policy distillation from a symbolic teacher"),
    "select": ("mgsd.train.select", "keep the sweep candidate with the best validation score"),
    "evaluate": (
        "mgsd.eval.evaluate",
        "one model on test sets (or the public benchmarks) -> records and a summary",
    ),
    "tables": ("mgsd.report.tables", "paper tables from the evaluation records"),
    "plots": ("mgsd.report.plots", "figures from the evaluation records and training logs"),
    "check-config": ("mgsd.config_cli", "validate a configuration and print it"),
}


def _usage() -> str:
    width = max(map(len, STAGES))
    lines = ["usage: mgsd <stage> [options]   (mgsd <stage> --help for its options)", "", "stages:"]
    lines += [f"  {name:<{width}}  {help}" for name, (_, help) in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in STAGES:
        print(f"mgsd: unknown stage {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(STAGES[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
