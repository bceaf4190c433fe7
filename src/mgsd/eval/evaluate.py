r"""`mgsd evaluate`: one model on the test sets of several puzzles, under several input
conditions -> per-instance records.

In the pipeline (every path given):

    mgsd evaluate --model results/default/models/mgsd/model --method mgsd \
        --data results/default/data/frozenlake/test.parquet results/default/data/maze/test.parquet \
        --config '{"conditions": ["image", "text"], "max_new_tokens": 192, ...}' \
        --out-dir results/default/eval/mgsd

The conditions come from the section (`--conditions` picks others for one job; with neither,
the task alone: image).

On its own, any model folder or hub id on the public test sets (VSP FrozenLake and
VisualPlanning MiniBehaviour from the benchmarks folder, Maze generated with VisualPlanning's
protocol; `mgsd.data.splits.PUBLIC_TEST_SETS`):

    mgsd evaluate --model Qwen/Qwen3-VL-4B-Instruct --benchmarks-dir ../shared/benchmarks \
        --config '{"limit_per_level": 20}'

Writes `<out-dir>/<puzzle>/<condition>.parquet` (one row per test instance; columns in
`mgsd.data.records.EVAL_SCHEMA`) and a metrics JSON beside each, when --out-dir is given, and
prints a one-screen summary: SR / EM / PR per puzzle with bootstrap intervals
(`mgsd.eval.summary`). Conditions: `image` (the real task), `text` (the state as text: the
model's symbolic upper bound) and `image_oracle_state` (the picture, with the true state forced
as the start of the reply: planning under perfect perception) and `teacher` (the teacher's
prompt: the state and the reference plan as text; the premise table reads it). Decoding is greedy and batched;
a reply that never closes an answer block is an unparsed failure under the strict parser, never
an error. The prompt style defaults to `compact` for a folder trained by mgsd and `instruct`
(the long prompt an instruct model follows without training) for anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from mgsd import cli_args, puzzles
from mgsd.config import (
    ConfigError,
    EvaluateConfig,
    TablesConfig,
    default_prompt_style,
    load_section,
    section_keys,
)
from mgsd.data import records
from mgsd.data.splits import public_test_rows
from mgsd.eval import summary
from mgsd.io import write_atomic_json
from mgsd.model.generate import generate
from mgsd.model.load import load_model
from mgsd.model.tasks import CONDITION_TASK, Instance, load_instances, make_example, to_instances
from mgsd.puzzles.base import PARSERS, parse_stated_state, stated_fields


def select(instances: list[Instance], limit_per_level: int) -> list[Instance]:
    """The first `limit_per_level` instances of each side (all when 0), in file order."""
    if not limit_per_level:
        return instances
    seen: dict[int, int] = defaultdict(int)
    out = []
    for inst in instances:
        if seen[inst.level] < limit_per_level:
            seen[inst.level] += 1
            out.append(inst)
    return out


def score_reply(inst: Instance, reply: str, offgrid: str, parser: str = "strict") -> dict:
    """The metrics of one reply under `parser`, its success under both answer readings, and the
    state it stated compared with the truth."""
    p = puzzles.get(inst.puzzle)
    readings = {name: p.score(inst.state, reply, offgrid, name) for name in PARSERS}
    s = readings[parser]
    stated = parse_stated_state(p, reply)
    fields = stated_fields(p, inst.state, reply)
    return {
        "actions": ",".join(s.actions or ()),
        "success": s.success,
        "exact_match": s.exact_match,
        "progress_rate": s.progress_rate,
        "parsed": s.parsed,
        "illegal_kind": s.illegal_kind,
        "parser": parser,
        "success_strict": readings["strict"].success,
        "success_paper": readings["paper"].success,
        "state_parsed": bool(stated),
        "state_correct": all(fields.values()),
        "state_fields": json.dumps(fields, sort_keys=True),
    }


def evaluate(
    model,
    processor,
    insts: list[Instance],
    method: str,
    condition: str,
    cfg: EvaluateConfig,
    style: str,
    replicate: int = 0,
    external: bool = False,
    progress: bool = True,
) -> list[dict]:
    task = CONDITION_TASK[condition]
    rows = []
    bar = tqdm(
        total=len(insts),
        desc=f"{method} {insts[0].puzzle if insts else ''} {condition}",
        unit="inst",
        mininterval=2.0,
        disable=not progress,
    )
    for i in range(0, len(insts), cfg.batch_size):
        chunk = insts[i : i + cfg.batch_size]
        examples = [make_example(task, inst, style, with_reply=False) for inst in chunk]
        t0 = time.perf_counter()
        gens = generate(model, processor, examples, max_new_tokens=cfg.max_new_tokens)
        dt = (time.perf_counter() - t0) / len(chunk)
        for inst, ex, g in zip(chunk, examples, gens, strict=True):
            reply = (ex.prefix or "") + g.text
            rows.append(
                {
                    "id": inst.id,
                    "puzzle": inst.puzzle,
                    "level": inst.level,
                    "method": method,
                    "replicate": replicate,
                    "external": external,
                    "condition": condition,
                    "prompt": json.dumps(ex.messages),
                    "reply": reply,
                    **score_reply(inst, reply, cfg.offgrid, cfg.parser),
                    "reply_tokens": len(g.token_ids),
                    "seconds": dt,
                }
            )
        bar.update(len(chunk))
    bar.close()
    return rows


def summary_stats(rows: list[dict]) -> dict:
    n = len(rows)
    mean = lambda k: sum(float(r[k]) for r in rows) / max(n, 1)  # noqa: E731
    by_level: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_level[r["level"]].append(r)
    return {
        "n": n,
        "success": mean("success"),
        "exact_match": mean("exact_match"),
        "progress_rate": mean("progress_rate"),
        "parse_rate": mean("parsed"),
        "success_strict": mean("success_strict"),
        "success_paper": mean("success_paper"),
        "state_correct": mean("state_correct"),
        "reply_tokens": mean("reply_tokens"),
        "per_level": {
            str(lv): {"n": len(rs), "success": sum(r["success"] for r in rs) / len(rs)}
            for lv, rs in sorted(by_level.items())
        },
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    args = cli_args.evaluate().parse_args(argv)
    args.prompt_style = args.prompt_style or default_prompt_style(args.model)
    args.method = args.method or model_name(args.model)
    return args


def model_name(model: str) -> str:
    """A name for the records of a model: its folder's name (its parent's for a pipeline's
    `models/<method>/model`), or the name part of a hub id."""
    path = Path(model.rstrip("/"))
    return path.parent.name if path.name == "model" and path.parent.name else path.name


def load_test_sets(args: argparse.Namespace, cfg: EvaluateConfig) -> dict[str, list[Instance]]:
    """The instances to evaluate, by where they come from: the --data files, or the public test
    sets of --benchmarks-dir; `limit_per_level` applied."""
    if args.data:
        return {path: select(load_instances([path]), cfg.limit_per_level) for path in args.data}
    out = {}
    for puzzle in args.puzzles:
        rows = public_test_rows(puzzle, args.benchmarks_dir, args.image_size, not args.no_progress)
        where = f"{args.benchmarks_dir} ({puzzle})"
        out[where] = select(to_instances(rows, where), cfg.limit_per_level)
    return out


def conditions(args: argparse.Namespace, cfg: EvaluateConfig) -> list[str]:
    """`--conditions` when given, else the evaluate section's when it names them (the
    pipeline's jobs pass the whole section), else the task alone (image)."""
    if args.conditions is not None:
        return list(args.conditions)
    if "conditions" in section_keys(args.config, "evaluate"):
        return list(cfg.conditions)
    return ["image"]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        cfg = load_section(EvaluateConfig, args.config, "evaluate")
        conds = conditions(args, cfg)
        by_source = load_test_sets(args, cfg)
        model, processor = load_model(args.model, trainable=False)
    except (ConfigError, records.RecordError, FileNotFoundError, OSError, ValueError) as e:
        print(f"mgsd evaluate: {e}", file=sys.stderr)
        return 1
    model.eval()
    every: list[dict] = []
    for source, insts in by_source.items():
        if not insts:
            print(f"mgsd evaluate: {source} has no instances", file=sys.stderr)
            return 1
        puzzle = insts[0].puzzle
        for cond in conds:
            with torch.inference_mode():
                rows = evaluate(
                    model, processor, insts, args.method, cond, cfg, args.prompt_style,
                    args.replicate, args.external, not args.no_progress,
                )  # fmt: skip
            every += rows
            stats = summary_stats(rows)
            if args.out_dir:
                write(rows, stats, Path(args.out_dir) / puzzle / f"{cond}.parquet", args, cfg)
            print(
                f"{args.method} {puzzle} {cond}: SR {stats['success']:.3f} "
                f"EM {stats['exact_match']:.3f} PR {stats['progress_rate']:.3f} "
                f"parsed {stats['parse_rate']:.3f} (n={stats['n']})"
            )
    ci = TablesConfig()
    title = f"\n{args.method}: {args.model}, {args.prompt_style} prompts"
    print(summary.render(every, title, ci.bootstrap, ci.confidence, ci.seed))
    return 0


def write(
    rows: list[dict], stats: dict, target: Path, args: argparse.Namespace, cfg: EvaluateConfig
) -> None:
    """The records of one (puzzle, condition) and the metrics JSON beside them."""
    records.write_eval(rows, target)
    meta = {
        "method": args.method, "replicate": args.replicate, "external": args.external,
        "model": args.model, "prompt_style": args.prompt_style, "parser": cfg.parser,
        "puzzle": rows[0]["puzzle"], "condition": rows[0]["condition"],
    }  # fmt: skip
    write_atomic_json(target.with_suffix(".json"), {**meta, **stats})
