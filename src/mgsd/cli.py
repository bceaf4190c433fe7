"""`mgsd <stage> ...`: one subcommand per pipeline stage.

Each stage lives in its own module with a ``main(argv) -> int``; this file only dispatches, so
that `mgsd --help` stays fast (no torch import) and stage modules stay leaves. The stages whose
modules load torch parse their command line with `mgsd.cli_args` first, so that their
`--help` and a usage error also answer at once.
"""

from __future__ import annotations

import importlib
import os
import sys

from mgsd import __version__

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
    "rl": ("mgsd.train.rl", "GRPO from the task reward (the RL baseline)"),
    "select": ("mgsd.train.select", "keep the sweep candidate with the best validation score"),
    "evaluate": (
        "mgsd.eval.evaluate",
        "one model on the test sets of several puzzles (or the public benchmarks), under "
        "several input conditions -> records, metrics and a summary",
    ),
    "equal-time": (
        "mgsd.equal_time",
        "a second run: the RL baseline again with the steps that take mgsd's GPU time",
    ),
    "tables": ("mgsd.report.tables", "paper tables from the evaluation records"),
    "plots": ("mgsd.report.plots", "figures from the evaluation records and training logs"),
    "check-config": ("mgsd.config_cli", "validate a configuration and print it"),
    "progress": (
        "mgsd.report.progress",
        "where each training stage of a run stands (step, loss or KL, ETA), from its logs",
    ),
}


def _usage() -> str:
    width = max(map(len, STAGES))
    lines = [
        "usage: mgsd <stage> [options]   (mgsd <stage> --help for its options)",
        "       mgsd --version",
        "",
        "stages:",
    ]
    lines += [f"  {name:<{width}}  {help}" for name, (_, help) in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"mgsd {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in STAGES:
        print(f"mgsd: unknown stage {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        from mgsd import cli_args

        if name in cli_args.PARSERS:
            cli_args.PARSERS[name]().parse_args(rest)  # --help, usage errors: before torch loads
        module = importlib.import_module(STAGES[name][0])
        code = int(module.main(rest) or 0)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader left early (mgsd check-config ... | head): stop quietly, as other tools do;
        # stdout goes to /dev/null so that the interpreter's last flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe
    return code


if __name__ == "__main__":
    sys.exit(main())
