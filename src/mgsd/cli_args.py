"""The command lines of the stages whose modules load torch (train-sft, distill, rl, evaluate,
select), built without it: `mgsd <stage> --help` and a mistyped option answer at once, before
the stage's module is imported. Each stage parses its arguments with the parser made here; the
help's description is the stage module's docstring, read from its source.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
from pathlib import Path

from mgsd.config import CONDITIONS, PROMPT_STYLES, PUZZLES, SFT_SECTIONS

LOSSES = ("sampled_reverse_kl", "full_reverse_kl")  # of `mgsd distill` (mgsd.train.losses)


def _parser(prog: str, module: str) -> argparse.ArgumentParser:
    """A parser whose description is `module`'s docstring, without importing the module."""
    source = Path(importlib.util.find_spec(module).origin).read_text()
    return argparse.ArgumentParser(
        prog=prog,
        description=ast.get_docstring(ast.parse(source), clean=False),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _training_outputs(ap: argparse.ArgumentParser) -> None:
    """The prompt style and the outputs that the training stages share."""
    ap.add_argument(
        "--prompt-style", dest="style", default="compact", choices=("compact", "instruct")
    )
    ap.add_argument("--out", required=True, help="final model folder")
    ap.add_argument("--metrics", required=True, help="final metrics JSON")
    ap.add_argument("--log", required=True, help="JSONL training log (written live)")
    ap.add_argument(
        "--final-log", help="where to copy the log once the run has succeeded (the rule's output)"
    )
    ap.add_argument("--work", required=True, help="folder for resumable checkpoints")


def train_sft() -> argparse.ArgumentParser:
    ap = _parser("mgsd train-sft", "mgsd.train.sft")
    ap.add_argument("--stage", required=True, choices=sorted(SFT_SECTIONS))
    ap.add_argument("--init", required=True, help="model folder or hub id to start from")
    ap.add_argument("--train", required=True, nargs="+", help="training Parquet files")
    ap.add_argument("--val", required=True, nargs="+", help="validation Parquet files")
    ap.add_argument("--config", required=True, help="the stage's config section as JSON (or @file)")
    _training_outputs(ap)
    return ap


def distill() -> argparse.ArgumentParser:
    ap = _parser("mgsd distill", "mgsd.train.distill")
    ap.add_argument("--method", required=True, help="name of the method (logs and model card)")
    ap.add_argument("--init", required=True, help="student's initial model folder or hub id")
    ap.add_argument("--teacher", required=True, help="frozen teacher model folder or hub id")
    ap.add_argument(
        "--teacher-sees-plan",
        action="store_true",
        help="the teacher's prompt includes the reference plan (the paper's default)",
    )
    ap.add_argument("--loss", default="sampled_reverse_kl", choices=LOSSES)
    _on_policy_inputs(ap, "distill")
    return ap


def rl() -> argparse.ArgumentParser:
    ap = _parser("mgsd rl", "mgsd.train.rl")
    ap.add_argument("--method", required=True, help="name of the method (logs and model card)")
    ap.add_argument(
        "--init", required=True, help="initial model folder or hub id (also the KL's reference)"
    )
    _on_policy_inputs(ap, "rl")
    return ap


def _on_policy_inputs(ap: argparse.ArgumentParser, section: str) -> None:
    """The replicate's seed, the data, the config section and the outputs of distill and rl."""
    ap.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="train with the config's seed + this (replicates of a method)",
    )
    ap.add_argument("--train", required=True, nargs="+", help="training Parquet files")
    ap.add_argument("--val", required=True, nargs="+", help="validation Parquet files")
    ap.add_argument("--config", required=True, help=f"the {section} section as JSON (or @file)")
    _training_outputs(ap)


def evaluate() -> argparse.ArgumentParser:
    ap = _parser("mgsd evaluate", "mgsd.eval.evaluate")
    ap.add_argument("--model", required=True, help="model folder or hub id")
    ap.add_argument(
        "--method", help="name written into the records (default: the model folder's name)"
    )
    ap.add_argument(
        "--replicate", type=int, default=0, help="which seed of the method (0: its first run)"
    )
    ap.add_argument(
        "--external",
        action="store_true",
        help="the model is evaluated as given, not trained by the pipeline (marked in the reports)",
    )
    tests = ap.add_mutually_exclusive_group(required=True)
    tests.add_argument(
        "--data",
        nargs="+",
        help="test Parquet files, one per puzzle (one job evaluates every puzzle given)",
    )
    tests.add_argument(
        "--benchmarks-dir",
        help="the public test sets instead: folder with vsp_frozenlake/ and vprl_minibehaviour/",
    )
    ap.add_argument(
        "--puzzles",
        nargs="+",
        default=list(PUZZLES),
        choices=list(PUZZLES),
        help="with --benchmarks-dir: which public test sets",
    )
    ap.add_argument(
        "--image-size", type=int, default=256, help="with --benchmarks-dir: picture side in pixels"
    )
    ap.add_argument(
        "--conditions",
        nargs="+",
        default=None,
        choices=sorted(CONDITIONS),
        help="input conditions, each run on every file: image (the task), text (the state as "
        "text), image_oracle_state (the true state forced as the reply's start), teacher (the "
        "teacher's prompt, with the reference plan); default: the conditions the --config "
        "section names, else image",
    )
    ap.add_argument(
        "--config", default="{}", help="the evaluate section as JSON (or @file); default: defaults"
    )
    ap.add_argument(
        "--prompt-style",
        choices=PROMPT_STYLES,
        help="default: compact for a folder trained by mgsd, instruct for any other model",
    )
    ap.add_argument(
        "--out-dir",
        help="writes <puzzle>/<condition>.parquet and .json here, for every puzzle x condition "
        "(default: none, the summary only)",
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def select() -> argparse.ArgumentParser:
    ap = _parser("mgsd select", "mgsd.train.select")
    ap.add_argument("--candidates", nargs="+", required=True, help="candidate folders, in order")
    ap.add_argument("--metric", default="val/success", help="validation key to maximise")
    ap.add_argument("--keys", nargs="*", default=[], help="the swept config keys (for the record)")
    ap.add_argument("--out", required=True, help="folder of the method (model/, metrics.json, ...)")
    return ap


PARSERS = {
    "train-sft": train_sft, "distill": distill, "rl": rl, "evaluate": evaluate, "select": select
}  # fmt: skip
