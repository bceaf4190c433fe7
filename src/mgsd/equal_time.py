"""`mgsd equal-time FILE [FILE ...]`: the RL baseline again at mgsd's GPU time, as a second run.

    mgsd equal-time pipeline_config.yaml presets/one_gpu.yaml
    snakemake --cores all all --configfile results/one_gpu_equal_time/equal_time.yaml

The files are the first run's config files, in the order Snakemake was given them. That run has
trained `mgsd` and `grpo` at an equal number of sampled replies. This command measures the GPU
time per step of each from their training logs (each step logs when it ended: the mean over the
steps from the end of the first to the end of the last, so the first step, which holds the
start-up and compilation, is left out), and gives `grpo` the number of RL steps
that takes `mgsd`'s time:

    rl.steps = mgsd's steps x mgsd's seconds per step / grpo's seconds per step

(mgsd's seconds per step: the mean over its seeds). The times compare only if the two trained
under the same conditions: each alone on its GPU (as under Slurm), or side by side on one.
`--steps N` sets the count instead.

The second run, `<run>_equal_time`, holds the methods that the RL runs are compared with (base,
symbolic, grounding, mgsd and mgsd's seeds) as hard links to the first run's files (data,
models, evaluations, premise): Snakemake finds them up to date and trains only `grpo` and
`grpo_only` (each with its seeds; `grpo_only` when the first run has it) with the new step count
and the first run's chosen settings (`grpo_only` takes `grpo`'s, as in the first run), then
evaluates them and builds the tables and figures, where their paired difference to `mgsd` is
the equal-time comparison.
Written there: `equal_time.yaml` (the second run's whole config) and `equal_time.json` (the step
times measured, the logs they came from and the step count).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import yaml

from mgsd.config import RL_METHODS, Config, ConfigError, load, load_file, to_dict
from mgsd.io import atomic_write_text, link_file, link_tree, write_atomic_json
from mgsd.workflow import SWEPT, replicate_name

# what grpo is compared with: the methods the second run takes over from the first
KEPT = ("base", "symbolic", "grounding", "mgsd")
MODEL_FILES = ("model", "metrics.json", "train_log.jsonl")  # what a training rule writes


class EqualTimeError(ValueError):
    """The first run lacks what the comparison needs, or the second run's folder exists."""


def seconds_per_step(log: Path) -> tuple[float, int]:
    """Mean seconds per step of an on-policy training log (its steps log their sampling time),
    from the first logged step to the last, and the run's number of steps."""
    try:
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise EqualTimeError(f"cannot read the training log {log}: {e}") from e
    steps = [r for r in rows if "perf/sample_s" in r and "time" in r and "step" in r]
    if len(steps) < 2 or steps[-1]["step"] == steps[0]["step"]:
        raise EqualTimeError(f"{log}: fewer than two timed training steps")
    total = max(int(r.get("total_steps", r["step"])) for r in steps)
    span = float(steps[-1]["time"]) - float(steps[0]["time"])
    return span / (int(steps[-1]["step"]) - int(steps[0]["step"])), total


def _seeds(cfg: Config, method: str) -> list[str]:
    return [method] + [replicate_name(method, k) for k in range(1, cfg.replicates.get(method, 1))]


def measure(cfg: Config, root: Path) -> dict:
    """Seconds per step of mgsd (each seed) and grpo (the chosen run), and the equal-time steps."""
    models = root / "models"
    mgsd = {m: seconds_per_step(models / m / "train_log.jsonl") for m in _seeds(cfg, "mgsd")}
    grpo_s, _ = seconds_per_step(models / "grpo" / "train_log.jsonl")
    mgsd_s = statistics.mean(s for s, _ in mgsd.values())
    mgsd_steps = max(n for _, n in mgsd.values())
    return {
        "mgsd_seconds_per_step": {m: s for m, (s, _) in mgsd.items()},
        "grpo_seconds_per_step": grpo_s,
        "mgsd_steps": mgsd_steps,
        "steps": max(1, round(mgsd_steps * mgsd_s / grpo_s)),
    }


def chosen(cfg: Config, root: Path, stage: str) -> dict | None:
    """The settings a sweep of `stage` chose in the first run (None: the stage was not swept)."""
    if stage not in cfg.sweep:
        return None
    path = root / "models" / SWEPT.get(stage, stage) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EqualTimeError(f"{stage} was swept but its choice cannot be read: {e}") from e


def second_config(cfg: Config, root: Path, steps: int, run: str) -> Config:
    """The first run's config with its sweeps' choices fixed, the RL steps set, no sweep."""
    raw = to_dict(cfg)
    for stage in ("grounding", "distill", "rl"):
        if (section := chosen(cfg, root, stage)) is not None:
            raw[stage] = section
    raw["rl"] = {**raw["rl"], "steps": steps}
    raw.update(
        run=run,
        methods=[m for m in cfg.methods if m in (*KEPT, *RL_METHODS)],
        sweep={},
        replicates={m: n for m, n in cfg.replicates.items() if m in ("mgsd", *RL_METHODS)},
        external_models={},
    )
    return load(raw)


def link_first_run(cfg: Config, root: Path, root2: Path) -> list[str]:
    """Hard links in `root2` to what the second run takes over from `root`; what was linked."""
    linked = []
    for sub in ("data", "premise"):
        if (root / sub).is_dir():
            link_tree(root / sub, root2 / sub)
            linked.append(sub)
    kept = [m for m in ("scratch", *KEPT) if m == "scratch" or m in cfg.methods]
    for m in [n for k in kept for n in _seeds(cfg, k)]:
        for name in MODEL_FILES:
            src, dst = root / "models" / m / name, root2 / "models" / m / name
            if src.is_dir():
                link_tree(src, dst)
            elif src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                link_file(src, dst)
            else:
                continue
            linked.append(f"models/{m}/{name}")
        if (root / "eval" / m).is_dir():
            link_tree(root / "eval" / m, root2 / "eval" / m)
            linked.append(f"eval/{m}")
    return linked


def prepare(files: list[str], workdir: Path, steps: int | None, run: str | None) -> dict:
    cfg = load_file(*files)
    for m in ("grounding", "mgsd", "grpo"):
        if m not in cfg.methods:
            raise EqualTimeError(f"the first run has no {m} (methods: {', '.join(cfg.methods)})")
    root = workdir / cfg.root
    if not (root / "models" / "grounding" / "model").is_dir():
        raise EqualTimeError(f"{root}: no grounding model (has the first run finished?)")
    measured = measure(cfg, root)
    if steps is not None:
        measured["steps"] = steps
    run = run or f"{cfg.run}_equal_time"
    cfg2 = second_config(cfg, root, measured["steps"], run)
    root2 = workdir / cfg2.root
    if root2.exists():
        raise EqualTimeError(f"{root2} exists: remove it, or name another run with --run")
    try:  # all or nothing: a half-made second run would be refused by the next call
        measured["linked"] = link_first_run(cfg, root, root2)
        measured["first_run"] = str(cfg.root)
        text = yaml.safe_dump(to_dict(cfg2), sort_keys=False)
        atomic_write_text(root2 / "equal_time.yaml", text)
        write_atomic_json(root2 / "equal_time.json", measured)
    except BaseException:
        shutil.rmtree(root2, ignore_errors=True)
        raise
    return {**measured, "config": str(cfg2.root / "equal_time.yaml")}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="mgsd equal-time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("files", nargs="+", help="the first run's config files, in order")
    ap.add_argument("--steps", type=int, help="grpo's RL steps (default: measured, as above)")
    ap.add_argument("--run", help="the second run's name (default: <run>_equal_time)")
    ap.add_argument("--dir", default=".", help="the working directory of both runs (default: here)")
    args = ap.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        ap.error(f"--steps {args.steps}: at least 1")
    try:
        out = prepare(args.files, Path(args.dir), args.steps, args.run)
    except (ConfigError, EqualTimeError) as e:
        print(f"mgsd equal-time: {e}", file=sys.stderr)
        return 1
    mgsd = out["mgsd_seconds_per_step"]
    print(
        f"mgsd: {statistics.mean(mgsd.values()):.3f} s/step over {len(mgsd)} seed(s), "
        f"{out['mgsd_steps']} steps; grpo: {out['grpo_seconds_per_step']:.3f} s/step\n"
        f"RL at mgsd's GPU time: rl.steps = {out['steps']}\n"
        f"linked from {out['first_run']}: {len(out['linked'])} files and folders\n"
        f"next: snakemake --cores all all --configfile {out['config']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
