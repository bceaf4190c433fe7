"""Paths and targets of the Snakemake workflow, as plain functions of the validated config.

The Snakefile and the rule files import this module; it holds no rule logic, only the layout of
`results/<run>/` (docs/architecture.md) so that every rule names its files the same way.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from mgsd.config import (
    BENCHMARK_SOURCES,
    Config,
    is_local_model,
    resources,
    section_json,
    sweep_candidates,
    swept_section,
)

SPLITS = ("train", "val", "test")


def data_file(cfg: Config, puzzle: str, split: str) -> str:
    return f"{cfg.root}/data/{puzzle}/{split}.parquet"


def uses_benchmark(cfg: Config, puzzle: str) -> bool:
    return cfg.data.puzzles[puzzle].test_source == BENCHMARK_SOURCES.get(puzzle, "")


def data_excludes(cfg: Config, puzzle: str, split: str) -> list[str]:
    """The data files a split must not overlap, in the order the splits are made.

    Generated test sets are made last and exclude train and val, so a new test seed reruns no
    training; a benchmark test set is fixed, so it is made first and train and val exclude it.
    """
    bench = uses_benchmark(cfg, puzzle)
    before = {
        "train": ["test"] if bench else [],
        "val": ["train", "test"] if bench else ["train"],
        "test": [] if bench else ["train", "val"],
    }[split]
    return [data_file(cfg, puzzle, s) for s in before]


def data_files(cfg: Config) -> list[str]:
    return [data_file(cfg, p, s) for p in cfg.data.puzzles for s in SPLITS]


# ------------------------------------------------------------------ models

# Distillation methods: (initial weights, teacher, teacher sees the reference plan, loss).
DISTILL_SETUPS = {
    "opd_only": ("base", "base", True, "sampled_reverse_kl"),
    "mgsd": ("grounding", "base", True, "sampled_reverse_kl"),
    "mgsd_no_plan": ("grounding", "base", False, "sampled_reverse_kl"),
    "mgsd_full_kl": ("grounding", "base", True, "full_reverse_kl"),
    "mgsd_teacher_grounded": ("grounding", "grounding", True, "sampled_reverse_kl"),
}
# RL methods (GRPO from the task reward) and the model each starts from (also its KL reference).
RL_INITS = {"grpo": "grounding", "grpo_only": "base"}
# Supervised methods and the model each starts from (its stage is its config section).
SFT_INITS = {"grounding": "base", "sft_direct": "base", "grounding_sft": "grounding"}
TABLES = (
    "main", "per_level", "ablations", "modality_gap", "perception", "errors", "premise", "seeds",
    "training",
)  # fmt: skip
# the premise of the experiment, measured on the base model and the validation split
PREMISE_CONDITIONS = ("image", "text", "image_oracle_state", "teacher")
FIGURES = ("success_vs_side", "modality_gap", "error_decomposition", "training_curves")
# the section each report job was made with, written beside its outputs (a declared output too)
REPORT_CONFIGS = {"tables": "tables_config.json", "figures": "plots_config.json"}


# ------------------------------------------------------------------ sweeps and replicates

REPLICATE = "-seed"  # models/<method>-seed<k>/: the method trained with its seed + k
# the validation key a sweep of a stage maximises: the real task (picture -> plan); grounding
# too, since what matters of stage 1 is what stage 2 starts from, not reading alone
SELECT_ON = {
    "grounding": "val/student/success",
    "sft_direct": "val/success",
    "grounding_sft": "val/success",
    "distill": "val/success",
    "rl": "val/success",
}


def swept(cfg: Config, stage: str) -> bool:
    return stage in cfg.sweep


def candidates(cfg: Config, stage: str) -> list[str]:
    """Names of the candidates of a swept stage: c0, c1, ... in grid order."""
    return [f"c{i}" for i in range(len(sweep_candidates(cfg, stage)))]


def candidate_config(cfg: Config, stage: str, name: str) -> str:
    """The section JSON candidate `name` trains with."""
    overrides = sweep_candidates(cfg, stage)[int(name[1:])]
    return section_json(swept_section(getattr(cfg, stage), overrides))


def replicate_name(method: str, k: int) -> str:
    return method if k == 0 else f"{method}{REPLICATE}{k}"


def split_replicate(name: str) -> tuple[str, int]:
    """`mgsd-seed2` -> ("mgsd", 2); a plain method name -> (name, 0)."""
    method, _, k = name.partition(REPLICATE)
    return method, int(k) if k else 0


def replicate_models(cfg: Config) -> list[str]:
    """The extra seeds of the replicated methods (their first seed is the method itself)."""
    return [replicate_name(m, k) for m, n in cfg.replicates.items() for k in range(1, n)]


def distill_setup(name: str) -> tuple[str, str, bool, str]:
    """(initial weights, teacher, teacher sees the plan, loss) of a method or its replicate."""
    return DISTILL_SETUPS[split_replicate(name)[0]]


# A distillation sweep tunes mgsd; its ablations (and every replicate) train with the settings
# mgsd chose, so that each of them changes one thing only. An RL sweep tunes grpo the same way;
# grpo_only and the replicates take its choice.
SWEPT = {"distill": "mgsd", "rl": "grpo"}
SWEPT_DISTILL, SWEPT_RL = SWEPT["distill"], SWEPT["rl"]


def chosen_config(cfg: Config, stage: str, name: str) -> list[str]:
    """The chosen-settings file an on-policy job of `stage` (distill, rl) reads: the swept
    method's once its sweep has run (every job of the stage but the swept method's own
    candidates), else none."""
    if swept(cfg, stage) and name != SWEPT[stage]:
        return [f"{cfg.root}/models/{SWEPT[stage]}/config.json"]
    return []


def config_arg(cfg: Config, stage: str, name: str) -> str:
    """What `mgsd distill --config` or `mgsd rl --config` gets: the section JSON, or the swept
    method's chosen settings."""
    chosen = chosen_config(cfg, stage, name)
    return f"@{chosen[0]}" if chosen else section_json(getattr(cfg, stage))


def model_dir(cfg: Config, name: str) -> str:
    return f"{cfg.root}/models/{name}/model"


def model_ref(cfg: Config, name: str) -> str:
    """What a stage loads for model `name`: a hub id for a pretrained base, else a folder."""
    if name == "base" and cfg.backbone.source == "pretrained":
        return cfg.backbone.pretrained
    return model_dir(cfg, name)


def model_inputs(cfg: Config, *names: str) -> list[str]:
    """The model folders a job reads (a pretrained base is no file of the workflow)."""
    refs = [model_ref(cfg, n) for n in names]
    return sorted({r for r, n in zip(refs, names, strict=True) if r == model_dir(cfg, n)})


def trained_models(cfg: Config) -> list[str]:
    """Models the configured methods need, in training order."""
    need: list[str] = []
    for m in cfg.methods:
        if m in ("base", "symbolic"):
            deps = ["base"]
        elif m in DISTILL_SETUPS:
            init, teacher, *_ = DISTILL_SETUPS[m]
            deps = ["base", init, teacher, m]
        elif m in SFT_INITS:
            deps = ["base", SFT_INITS[m], m]
        elif m in RL_INITS:
            deps = ["base", RL_INITS[m], m]
        else:
            deps = ["base", m]
        need += [d for d in deps if d not in need]
    if cfg.backbone.source == "pretrained":
        need = [n for n in need if n != "base"]
    return need


# ------------------------------------------------------------------ evaluation


def eval_model(method: str) -> str:
    """The model a method is evaluated with (`symbolic` is the base model given the text state)."""
    return "base" if method == "symbolic" else method


def eval_outputs(cfg: Config, method: str, ext: str = ".parquet") -> list[str]:
    """The records (or metrics) files of one evaluation job: every puzzle x condition."""
    return [
        f"{cfg.root}/eval/{method}/{p}/{c}{ext}"
        for p in cfg.data.puzzles
        for c in cfg.evaluate.conditions
    ]


def evaluated_models(cfg: Config) -> list[str]:
    """The trained models the `evaluate` rule evaluates: one per method, and the replicates."""
    return list(dict.fromkeys([*(eval_model(m) for m in cfg.methods), *replicate_models(cfg)]))


def eval_files(cfg: Config) -> list[str]:
    """Every evaluation records file: the trained models', then the external models'."""
    trained = [f for m in evaluated_models(cfg) for f in eval_outputs(cfg, m)]
    return trained + external_files(cfg)


# ------------------------------------------------------------------ external models


def external_conditions(cfg: Config, name: str) -> tuple[str, ...]:
    """The input conditions external model `name` is evaluated under."""
    return cfg.external_models[name].conditions or cfg.evaluate.conditions


def external_outputs(cfg: Config, name: str, condition: str, ext: str = ".parquet") -> list[str]:
    """The records (or metrics) files of one external evaluation job: every puzzle, one
    condition (a job per model and condition, so that each model has its own conditions)."""
    return [f"{cfg.root}/eval/{name}/{p}/{condition}{ext}" for p in cfg.data.puzzles]


def external_files(cfg: Config) -> list[str]:
    return [
        f
        for name in cfg.external_models
        for c in external_conditions(cfg, name)
        for f in external_outputs(cfg, name, c)
    ]


def external_inputs(cfg: Config, name: str) -> list[str]:
    """The model folder an external evaluation reads (none for a hub id), so that a model
    written anew into the folder reruns its evaluation."""
    path = cfg.external_models[name].path
    return [path] if is_local_model(path) else []


def one_of(names: Iterable[str]) -> str:
    """A wildcard constraint matching exactly `names` (and nothing when there are none)."""
    names = list(names)
    return "|".join(map(re.escape, names)) if names else "(?!)"


def premise_outputs(cfg: Config, ext: str = ".parquet") -> list[str]:
    """The records (or metrics) of the base model on the validation split, every puzzle x
    premise condition: what the tables' premise is made of, before any method."""
    return [
        f"{cfg.root}/premise/base/{p}/{c}{ext}"
        for p in cfg.data.puzzles
        for c in PREMISE_CONDITIONS
    ]


def train_logs(cfg: Config, every_run: bool = False) -> list[str]:
    """The training log of every trained model; `every_run`: also of every sweep candidate and
    every replicate (what the training table checks)."""
    models = trained_models(cfg)
    logs = [f"{cfg.root}/models/{m}/train_log.jsonl" for m in models]
    if every_run:
        logs += [f"{cfg.root}/models/{m}/train_log.jsonl" for m in replicate_models(cfg)]
        for m in models:
            stage = "distill" if m in DISTILL_SETUPS else "rl" if m in RL_INITS else m
            if swept(cfg, stage) and (stage not in SWEPT or m == SWEPT[stage]):
                logs += [
                    f"{cfg.root}/models/{m}/sweep/{c}/train_log.jsonl"
                    for c in candidates(cfg, stage)
                ]
    return logs


def report_files(cfg: Config) -> list[str]:
    tables = [f"{cfg.root}/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")]
    figures = [f"{cfg.root}/figures/{f}.{ext}" for f in FIGURES for ext in cfg.plots.formats]
    return tables + figures


# ------------------------------------------------------------------ rule helpers


def data_params(cfg: Config, puzzle: str, split: str) -> dict:
    """The generator options of one data job (and nothing else: they are its rerun triggers)."""
    p = cfg.data.puzzles[puzzle]
    bench = split == "test" and uses_benchmark(cfg, puzzle)
    per_level = {"train": p.train_per_level, "val": p.val_per_level, "test": p.test_per_level}
    opts = [f"--levels {' '.join(map(str, p.levels))}", f"--image-size {cfg.data.image_size}"]
    if bench:
        opts.append(
            f"--source {p.test_source} --benchmarks-dir {shlex.quote(cfg.data.benchmarks_dir)}"
        )
    else:
        opts.append(f"--per-level {per_level[split]} --seed {getattr(cfg.data.seeds, split)}")
        if puzzle == "frozenlake":
            opts.append(f"--hole-fraction {p.hole_fraction[0]} {p.hole_fraction[1]}")
    return {"options": " ".join(opts)}


def cpu_resources(cfg: Config, stage: str) -> dict:
    r = resources(cfg, stage)
    return {
        "cpus_per_task": r.cpus,
        "mem_mb": lambda wc, attempt: r.mem_mb * 2 ** (attempt - 1),
        "runtime": lambda wc, attempt: r.runtime * 2 ** (attempt - 1),
    }


def gpu_resources(cfg: Config, stage: str) -> dict:
    """Slurm resources of a GPU stage; memory and time double with each retry."""
    r = resources(cfg, stage)
    if not r.gpus:
        return cpu_resources(cfg, stage)
    return {
        "gpu": r.gpus,
        "cpus_per_gpu": r.cpus_per_gpu,
        # SIGTERM before the time limit: the training loops save a checkpoint and exit 75
        "slurm_extra": f"--signal=TERM@{r.warning_s}",
        "mem_mb": lambda wc, attempt: r.mem_mb * 2 ** (attempt - 1),
        "runtime": lambda wc, attempt: r.runtime * 2 ** (attempt - 1),
    }


def launcher(cfg: Config, stage: str) -> str:
    """`mgsd`, or `accelerate launch` over N processes for a stage given N > 1 GPUs.

    The launcher must pass Slurm's warning signal on to the workers and give them time to
    write a checkpoint (torch elastic's defaults: SIGUSR1 kills it, workers get 30 s).
    """
    r = resources(cfg, stage)
    if r.gpus <= 1:
        return "mgsd"
    return (
        "env PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
        f" PET_SHUTDOWN_TIMEOUT={max(60, r.warning_s // 2)}"
        f" accelerate launch --multi_gpu --num_machines 1 --num_processes {r.gpus}"
        " --dynamo_backend no -m mgsd.cli"
    )
