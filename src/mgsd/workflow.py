"""Paths and targets of the Snakemake workflow, as plain functions of the validated config.

The Snakefile and the rule files import this module; it holds no rule logic, only the layout of
`results/<run>/` (docs/architecture.md) so that every rule names its files the same way.
"""

from __future__ import annotations

from mgsd.config import BENCHMARK_SOURCES, Config, resources

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
SFT_STAGES = ("grounding", "sft_direct")
TABLES = ("main", "per_level", "ablations", "modality_gap", "perception", "errors")
FIGURES = ("success_vs_side", "modality_gap", "error_decomposition", "training_curves")


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


def eval_files(cfg: Config) -> list[str]:
    models = dict.fromkeys(eval_model(m) for m in cfg.methods)
    return [f for m in models for f in eval_outputs(cfg, m)]


def train_logs(cfg: Config) -> list[str]:
    return [f"{cfg.root}/models/{m}/train_log.jsonl" for m in trained_models(cfg)]


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
        opts.append(f"--source {p.test_source} --benchmarks-dir '{cfg.data.benchmarks_dir}'")
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
        "PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
        f" PET_SHUTDOWN_TIMEOUT={max(60, r.warning_s // 2)}"
        f" accelerate launch --multi_gpu --num_machines 1 --num_processes {r.gpus}"
        " --dynamo_backend no -m mgsd.cli"
    )
