"""`mgsd evaluate`: one model on the test sets, under each input condition -> per-instance records.

    mgsd evaluate --model results/default/models/mgsd/model --method mgsd \
        --data results/default/data/maze/test.parquet --conditions image text \
        --config '{"max_new_tokens": 192, ...}' --out-dir results/default/eval/mgsd

Writes `<out-dir>/<puzzle>/<condition>.parquet` (one row per test instance; columns in
`mgsd.data.records.EVAL_SCHEMA`) and a metrics JSON beside each. Conditions: `image` (the real
task), `text` (the state as text: the model's symbolic upper bound) and `image_oracle_state` (the
picture, with the true state forced as the start of the reply: planning under perfect
perception). Decoding is greedy and batched; a reply that never closes an answer block is an
unparsed failure, never an error.
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

from mgsd import puzzles
from mgsd.config import ConfigError, EvaluateConfig, load_section
from mgsd.data import records
from mgsd.model import prompts
from mgsd.model.generate import generate
from mgsd.model.load import load_model
from mgsd.model.tasks import CONDITION_TASK, Instance, load_instances, make_example
from mgsd.puzzles.base import PARSERS
from mgsd.train.common import write_atomic_json


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
    stated = prompts.parse_stated_state(inst.puzzle, reply)
    truth = p.field_values(inst.state)
    fields = {k: stated.get(k) == v for k, v in truth.items()}
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
) -> list[dict]:
    task = CONDITION_TASK[condition]
    rows = []
    bar = tqdm(
        total=len(insts),
        desc=f"{method} {insts[0].puzzle if insts else ''} {condition}",
        unit="inst",
        mininterval=2.0,
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


def summary(rows: list[dict]) -> dict:
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
    ap = argparse.ArgumentParser(
        prog="mgsd evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", required=True, help="model folder or hub id")
    ap.add_argument("--method", required=True, help="method name written into the records")
    ap.add_argument(
        "--replicate", type=int, default=0, help="which seed of the method (0: its first run)"
    )
    ap.add_argument(
        "--external",
        action="store_true",
        help="the model is evaluated as given, not trained by the pipeline (marked in the reports)",
    )
    ap.add_argument("--data", required=True, nargs="+", help="test Parquet files (one per puzzle)")
    ap.add_argument(
        "--conditions",
        nargs="+",
        default=["image"],
        choices=sorted(CONDITION_TASK),
        help="input conditions",
    )
    ap.add_argument("--config", required=True, help="the evaluate section as JSON (or @file)")
    ap.add_argument("--prompt-style", default="compact", choices=("compact", "instruct"))
    ap.add_argument("--out-dir", required=True, help="writes <puzzle>/<condition>.parquet here")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        cfg = load_section(EvaluateConfig, args.config, "evaluate")
        by_puzzle = {
            path: select(load_instances([path]), cfg.limit_per_level) for path in args.data
        }
        model, processor = load_model(args.model, trainable=False)
    except (ConfigError, records.RecordError, FileNotFoundError, OSError, ValueError) as e:
        print(f"mgsd evaluate: {e}", file=sys.stderr)
        return 1
    model.eval()
    out_dir = Path(args.out_dir)
    for path, insts in by_puzzle.items():
        if not insts:
            print(f"mgsd evaluate: {path} has no instances", file=sys.stderr)
            return 1
        puzzle = insts[0].puzzle
        for cond in args.conditions:
            with torch.inference_mode():
                rows = evaluate(
                    model, processor, insts, args.method, cond, cfg, args.prompt_style,
                    args.replicate, args.external,
                )  # fmt: skip
            target = out_dir / puzzle / f"{cond}.parquet"
            records.write_eval(rows, target)
            stats = summary(rows)
            write_atomic_json(
                target.with_suffix(".json"),
                {
                    "method": args.method,
                    "replicate": args.replicate,
                    "external": args.external,
                    "model": args.model,
                    "prompt_style": args.prompt_style,
                    "parser": cfg.parser,
                    "puzzle": puzzle,
                    "condition": cond,
                    **stats,
                },  # fmt: skip
            )
            print(
                f"{args.method} {puzzle} {cond}: SR {stats['success']:.3f} "
                f"EM {stats['exact_match']:.3f} PR {stats['progress_rate']:.3f} "
                f"parsed {stats['parse_rate']:.3f} (n={stats['n']})"
            )
    return 0
