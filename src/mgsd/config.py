"""The pipeline configuration: one YAML, one section per stage, validated into frozen dataclasses.

`load(dict)` turns the merged Snakemake config (``pipeline_config.yaml`` plus any
``--configfile`` overlays) into a `Config`, or raises `ConfigError` naming the bad key. The
Snakefile calls it before any job runs; each stage CLI receives only its own section as JSON
(`section_json`) and rebuilds it with `load_section`, so changing one section reruns only the
stages that read it.

Every field carries its help text in ``metadata["help"]``; ranges are checked in
``__post_init__``-free form by `_check` so that the message names the full key path.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mgsd import puzzles as _registry

PUZZLES = _registry.NAMES  # a puzzle is its module and its line in the registry
CONDITIONS = ("image", "text", "image_oracle_state", "teacher")
# what a supervised stage can train (mgsd.model.tasks documents each)
TASKS = (
    "student", "symbolic", "teacher", "grounding", "grounding_student", "oracle", "perception"
)  # fmt: skip
DISTILL_METHODS = ("opd_only", "mgsd", "mgsd_no_plan", "mgsd_full_kl", "mgsd_teacher_grounded")
RL_METHODS = ("grpo_only", "grpo")
METHODS = (
    "base", "symbolic", "sft_direct", "grounding", "grounding_sft", *DISTILL_METHODS, *RL_METHODS
)  # fmt: skip
ON_POLICY_METHODS = (*DISTILL_METHODS, *RL_METHODS)
LEVEL_RANGE = {name: _registry.get(name).LEVELS for name in PUZZLES}
BENCHMARK_SOURCES = {"frozenlake": "vsp", "minibehaviour": "vprl"}


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def _f(default: Any = dataclasses.MISSING, help: str = "", **checks: Any) -> Any:
    """A dataclass field with help text and checks: a range (ge, gt, le, lt), or a closed set of
    names (`among`, what each is called in an error: `what`)."""
    meta = {"help": help, **checks}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- data


@dataclass(frozen=True, kw_only=True)
class PuzzleData:
    levels: tuple[int, ...] = _f(help="grid sides N to generate")
    train_per_level: int = _f(help="training instances per side", ge=1)
    val_per_level: int = _f(help="validation instances per side", ge=1)
    test_per_level: int = _f(help="test instances per side (generated test sets)", ge=1)
    test_source: Literal["generated", "vsp", "vprl"] = _f(
        "generated",
        help="generated, or the public benchmark: vsp (frozenlake), vprl (minibehaviour)",
    )
    hole_fraction: tuple[float, float] = _f(
        (0.2, 0.2),
        help="frozenlake only: range of the per-map probability that a cell other than start "
        "and goal is a hole (0.2 gives VSP's realised 14-19% holes)",
    )


@dataclass(frozen=True, kw_only=True)
class Seeds:
    train: int = _f(1, help="seed of the training split", ge=0)
    val: int = _f(2, help="seed of the validation split", ge=0)
    test: int = _f(
        3, help="seed of generated test splits (reserved: never used for training)", ge=0
    )


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    puzzles: dict[str, PuzzleData] = _f(help="per puzzle: sides, split sizes, test source")
    image_size: int = _f(256, help="side in pixels of every picture the model sees", ge=32, le=2048)
    benchmarks_dir: str | None = _f(
        None,
        help="folder with vsp_frozenlake/ and vprl_minibehaviour/ (needed by benchmark test sources)",
    )
    seeds: Seeds = _f(Seeds(), help="split seeds")


# ---------------------------------------------------------------- backbone


@dataclass(frozen=True, kw_only=True)
class ScratchConfig:
    hidden_size: int = _f(128, help="text hidden size", ge=8)
    num_hidden_layers: int = _f(2, help="text decoder layers", ge=1)
    num_attention_heads: int = _f(4, help="attention heads", ge=1)
    num_key_value_heads: int = _f(2, help="key/value heads (GQA)", ge=1)
    head_dim: int = _f(32, help="per-head dimension", ge=4)
    intermediate_size: int = _f(256, help="MLP width", ge=8)
    mrope_section: tuple[int, int, int] = _f(
        (4, 6, 6), help="M-RoPE split of head_dim/2 into (time, height, width)"
    )
    rope_theta: float = _f(10000.0, help="rotary base", gt=0)
    max_position_embeddings: int = _f(4096, help="longest sequence", ge=64)
    vocab_size: int = _f(
        1024, help="size the domain tokenizer is trained to (BPE target; it may stop short)", ge=300
    )
    embedding_rows: int = _f(
        0,
        help="rows of the embedding and output head (0: the tokenizer's size rounded up to a "
        "multiple of 64); rows past the tokenizer are never sampled nor trained on",
        ge=0,
    )
    vision_depth: int = _f(2, help="vision transformer blocks", ge=1)
    vision_hidden_size: int = _f(64, help="vision hidden size", ge=8)
    vision_num_heads: int = _f(4, help="vision attention heads", ge=1)
    vision_intermediate_size: int = _f(128, help="vision MLP width", ge=8)
    patch_size: int = _f(16, help="vision patch side in pixels", ge=2)
    spatial_merge_size: int = _f(2, help="patches merged per side into one image token", ge=1)
    deepstack_visual_indexes: tuple[int, ...] = _f(
        (1,), help="vision blocks whose features are added to the first text layers"
    )
    num_position_embeddings: int = _f(
        256, help="learned vision position embeddings (a square)", ge=1
    )
    seed: int = _f(0, help="seed of the random initial weights", ge=0)


@dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    source: Literal["scratch", "pretrained"] = _f(
        "scratch",
        help="scratch: random Qwen3-VL weights of the sizes below; pretrained: a hub id or path",
    )
    pretrained: str = _f(
        "Qwen/Qwen3-VL-4B-Instruct", help="hub id or local folder (source: pretrained)"
    )
    prompt_style: Literal["compact", "instruct"] = _f(
        "compact", help="compact prompts for scratch models, full instructions for instruct models"
    )
    scratch: ScratchConfig = _f(ScratchConfig(), help="sizes of the scratch architecture")


# ---------------------------------------------------------------- training


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    rank: int = _f(8, help="LoRA rank", ge=1)
    alpha: float = _f(16.0, help="LoRA alpha", gt=0)
    dropout: float = _f(0.0, help="LoRA dropout", ge=0, lt=1)
    target_modules: str = _f(
        "all-linear", help="peft target_modules; the vision tower is excluded unless train_vision"
    )


# experiment trackers of accelerate (mgsd.train.common.JsonlLogger feeds them the log's metrics)
Tracker = Literal[
    "tensorboard", "wandb", "mlflow", "aim", "comet_ml", "clearml", "dvclive", "swanlab", "trackio"
]


# The settings every training loop reads alike (supervised and on-policy): one definition each.
_RUN_FIELDS: dict[str, tuple[Any, str, dict]] = {
    "grad_clip": (1.0, "gradient norm clip (0: off)", {"ge": 0}),
    "train_vision": (True, "train the vision tower too", {}),
    "compile": (
        False,
        "torch.compile every decoder layer and vision block (GPU: 4B full fine-tuning 1.4x "
        "faster, about a minute of compiling at the start)",
        {},
    ),
    "val_instances": (16, "validation instances for greedy success", {"ge": 0}),
    "checkpoint_every": (50, "resumable checkpoint every K steps (0: never)", {"ge": 0}),
    "keep_checkpoints": (
        False,
        "keep the resumable checkpoints after the final model is written (they hold the "
        "optimizer state: about 96 GB for a 4B model under full fine-tuning)",
        {},
    ),
    "log_with": (
        (),
        "experiment trackers fed the training log's metrics (off when empty), e.g. "
        "[tensorboard]: event files beside the live log (tensorboard --logdir "
        "results/<run>/resume; pip install 'mgsd[track]'); wandb, mlflow, aim, comet_ml, "
        "clearml, dvclive, swanlab, trackio need their own package and settings",
        {},
    ),
    "log_every": (1, "log every K steps", {"ge": 1}),
}


def _run_field(name: str) -> Any:
    """The field `name` of `_RUN_FIELDS`, as every training stage's section declares it."""
    default, help, checks = _RUN_FIELDS[name]
    return _f(default, help=help, **checks)


@dataclass(frozen=True, kw_only=True)
class MixEntry:
    weight: float = _f(help="share of the batch's examples (weights are normalised)", ge=0)
    sides: int = _f(0, help="draw only from the N smallest sides of each puzzle (0: all)", ge=0)
    instances: int = _f(0, help="draw from at most N training instances (0: all)", ge=0)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One supervised stage: symbolic_pretrain, grounding or sft_direct."""

    steps: int = _f(help="optimizer steps", ge=1)
    batch_size: int = _f(help="global batch (examples per optimizer step, all processes)", ge=1)
    grad_accum: int = _f(1, help="micro-batches per optimizer step", ge=1)
    lr: float = _f(help="peak learning rate", gt=0)
    schedule: Literal["cosine", "constant"] = _f("cosine", help="learning-rate schedule")
    warmup_ratio: float = _f(0.1, help="share of steps with linear warmup", ge=0, le=1)
    weight_decay: float = _f(0.0, help="AdamW weight decay", ge=0)
    grad_clip: float = _run_field("grad_clip")
    finetune: Literal["full", "lora"] = _f(
        "full", help="full fine-tuning or LoRA (merged at the end)"
    )
    lora: LoraConfig = _f(LoraConfig(), help="LoRA settings (finetune: lora)")
    train_vision: bool = _run_field("train_vision")
    compile: bool = _run_field("compile")
    grounding_prompt: Literal["grounding", "student"] = _f(
        "grounding",
        help="grounding: the prompt the state is read under (student: the task's own prompt, "
        "the state as the start of the reply, no end of turn, so the model goes on to plan)",
    )
    mix: dict[str, MixEntry] | None = _f(
        None,
        help="tasks of the stage and their shares, e.g. {symbolic: {weight: 0.4}, student: "
        "{weight: 0.05, sides: 1}} (null or empty: the stage's own task; an overlay's null "
        "clears the mix it overlays); tasks: " + ", ".join(TASKS),
    )
    supervise_end: bool = _f(
        True,
        help="grounding: label the end of the turn after the state (false: the model is not "
        "taught to stop after the state and goes on with the base model's plan)",
    )
    eval_every: int = _f(0, help="validation every K steps (0: only at the end)", ge=0)
    val_instances: int = _run_field("val_instances")
    val_max_new_tokens: int = _f(256, help="generation budget of greedy validation", ge=1)
    checkpoint_every: int = _run_field("checkpoint_every")
    keep_checkpoints: bool = _run_field("keep_checkpoints")
    log_with: tuple[Tracker, ...] = _run_field("log_with")
    log_every: int = _run_field("log_every")
    data_workers: int = _f(
        0,
        help="processes that build the next batches while the accelerator trains (0: built in "
        "the loop; a GPU run gains from 2-4; the batches are the same for any number)",
        ge=0,
    )
    seed: int = _f(0, help="seed of batch order and dropout", ge=0)


@dataclass(frozen=True, kw_only=True)
class OnPolicyConfig:
    """What every on-policy stage (distillation, RL) shares: sampling, optimiser, checkpoints."""

    steps: int = _f(help="optimizer steps; the budget is steps x batch_size x samples", ge=1)
    batch_size: int = _f(help="prompts per step (global)", ge=1)
    samples_per_prompt: int = _f(1, help="replies sampled per prompt", ge=1)
    temperature: float = _f(1.0, help="sampling temperature", gt=0)
    max_new_tokens: int = _f(help="longest sampled reply", ge=1)
    lr: float = _f(help="learning rate", gt=0)
    schedule: Literal["cosine", "constant"] = _f("constant", help="learning-rate schedule")
    warmup_ratio: float = _f(0.0, help="share of steps with linear warmup", ge=0, le=1)
    weight_decay: float = _f(0.01, help="AdamW weight decay", ge=0)
    grad_clip: float = _run_field("grad_clip")
    clip_low: float = _f(
        0.2, help="PPO clip of the importance ratio, below 1 (1 - clip_low)", gt=0, lt=1
    )
    clip_high: float = _f(
        0.2, help="PPO clip of the importance ratio, above 1 (1 + clip_high)", gt=0
    )
    train_vision: bool = _run_field("train_vision")
    compile: bool = _run_field("compile")
    eval_every: int = _f(0, help="greedy validation every K steps (0: only at the end)", ge=0)
    val_instances: int = _run_field("val_instances")
    checkpoint_every: int = _run_field("checkpoint_every")
    keep_checkpoints: bool = _run_field("keep_checkpoints")
    log_with: tuple[Tracker, ...] = _run_field("log_with")
    log_every: int = _run_field("log_every")
    seed: int = _f(0, help="seed of batch order and sampling", ge=0)


@dataclass(frozen=True, kw_only=True)
class DistillConfig(OnPolicyConfig):
    """On-policy distillation (MGSD stage 2), shared by every distillation method."""

    dual_clip: float = _f(
        0.0,
        help="dual-clip PPO: the loss of a negative advantage A is at most -dual_clip x A "
        "(0: off, else > 1; the reference code uses 3)",
        ge=0,
    )
    kl_baseline: bool = _f(
        False,
        help="sampled_reverse_kl: subtract from each token's advantage its expectation under "
        "the student, -KL_t (the exact per-token reverse KL): same expected gradient, less variance",
    )
    forward_kl_weight: float = _f(
        0.0,
        help="weight of a forward-KL term: cross-entropy from the teacher's renormalised top-k "
        "to the student at every reply token (0: off)",
        ge=0,
    )
    forward_kl_top_k: int = _f(
        16, help="tokens of the teacher's top-k in the forward-KL term", ge=1
    )
    teacher_offload: bool = _f(False, help="keep the teacher on the CPU between steps")
    reward_weight: float = _f(
        0.0, help="weight of the task reward in the advantage (0: logged only)", ge=0
    )


@dataclass(frozen=True, kw_only=True)
class RLConfig(OnPolicyConfig):
    """GRPO from the task reward (methods grpo and grpo_only): the budget in sampled replies is
    steps x batch_size x samples_per_prompt, as in distillation."""

    samples_per_prompt: int = _f(
        8, help="replies per prompt: the group whose rewards set each other's advantage", ge=2
    )
    updates_per_batch: int = _f(
        1,
        help="optimizer steps on each batch of samples (1: on-policy, the ratio is 1 and the "
        "clip never bites; more: the PPO ratio against the sampling policy, clipped)",
        ge=1,
    )
    kl_weight: float = _f(
        0.0,
        help="weight of the KL to the initial policy (k3 estimator on the samples; 0: off, and "
        "no reference model is loaded)",
        ge=0,
    )
    success_reward: float = _f(1.0, help="reward of a plan that reaches the goal", ge=0)
    progress_reward: float = _f(
        1.0,
        help="weight of the plan's progress rate (VisualPlanning's progress reward: the share "
        "of the optimal plan's length made good before the first mistake)",
        ge=0,
    )
    unparsed_penalty: float = _f(1.0, help="subtracted for a reply with no readable plan", ge=0)
    illegal_penalty: float = _f(
        0.5,
        help="subtracted for a plan with an illegal action (hole, wall, off the grid, ...)",
        ge=0,
    )
    advantage_eps: float = _f(1e-4, help="added to the group's reward std before dividing", gt=0)


# ---------------------------------------------------------------- evaluation and report


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    conditions: tuple[str, ...] = _f(
        CONDITIONS,
        help="input conditions: image, text, image_oracle_state",
        among=CONDITIONS,
        what="condition",
    )
    max_new_tokens: int = _f(512, help="generation budget per reply", ge=1)
    batch_size: int = _f(32, help="replies generated together", ge=1)
    offgrid: Literal["fail", "stay"] = _f(
        "fail", help="a move off the grid fails (paper) or stays put"
    )
    limit_per_level: int = _f(
        0, help="evaluate at most this many test instances per side (0: all)", ge=0
    )
    parser: Literal["strict", "paper"] = _f(
        "strict",
        help="answer reading behind SR / EM / PR: strict (the last closed <answer> block, every "
        "token an action) or paper (the MGSD paper's lenient evaluator: the first block, or "
        "every action word of the reply when no block is closed); both successes are recorded",
    )


@dataclass(frozen=True, kw_only=True)
class TablesConfig:
    bootstrap: int = _f(1000, help="bootstrap resamples for confidence intervals", ge=10)
    confidence: float = _f(0.95, help="confidence level of the intervals", gt=0, lt=1)
    seed: int = _f(0, help="bootstrap seed", ge=0)


FigureFormat = Literal["png", "pdf", "svg"]


@dataclass(frozen=True, kw_only=True)
class PlotsConfig:
    formats: tuple[FigureFormat, ...] = _f(("png", "pdf"), help="figure file formats")
    dpi: int = _f(150, help="PNG resolution", ge=50, le=600)


@dataclass(frozen=True, kw_only=True)
class Resources:
    gpus: int = _f(0, help="GPUs per job (0: CPU job)", ge=0)
    cpus_per_gpu: int = _f(8, help="CPU cores per GPU (GPU jobs)", ge=1)
    cpus: int = _f(1, help="CPU cores (CPU jobs)", ge=1)
    mem_mb: int = _f(8000, help="memory per job in MB (doubled on each retry)", ge=100)
    runtime: int = _f(60, help="time limit in minutes (doubled on each retry)", ge=1)
    warning_s: int = _f(
        300, help="GPU jobs: Slurm sends SIGTERM this long before the time limit (checkpoint)", ge=0
    )


PROMPT_STYLES = ("compact", "instruct")
STAGE_FILE = "mgsd_stage.json"  # what made a model folder (written by mgsd.model.load)


@dataclass(frozen=True, kw_only=True)
class ExternalModel:
    """A vision-language model the pipeline evaluates as given, on the same test sets."""

    path: str = _f(help="a local Hugging Face model folder or a hub id (org/name)")
    prompt_style: Literal["compact", "instruct"] = _f(
        "instruct",
        help="instruct: the long prompt an instruct model follows without training (rules, "
        "picture legend, coordinates, state and answer formats, the reply format with the state "
        "first and one <answer> block); compact: the short headers of models trained by mgsd",
    )
    conditions: tuple[str, ...] | None = _f(
        None,
        help="input conditions to evaluate it under (null: evaluate.conditions)",
        among=CONDITIONS,
        what="condition",
    )


STAGES = (
    "data", "symbolic_pretrain", "grounding", "sft_direct", "grounding_sft", "distill", "rl",
    "evaluate", "report",
)  # fmt: skip
SFT_SECTIONS = ("symbolic_pretrain", "grounding", "sft_direct", "grounding_sft")


@dataclass(frozen=True, kw_only=True)
class Config:
    run: str = _f(help="name of the run: outputs go to <results_dir>/<run>/")
    data: DataConfig = _f(help="datasets")
    backbone: BackboneConfig = _f(help="the base model")
    symbolic_pretrain: TrainConfig = _f(help="scratch backbones: text-only pretraining (the base)")
    grounding: TrainConfig = _f(help="MGSD stage 1: image -> state text")
    sft_direct: TrainConfig = _f(help="baseline: image -> full reply with the optimal plan")
    grounding_sft: TrainConfig | None = _f(
        None,
        help="ablation grounding_sft: grounding, then supervised image -> full reply (give it "
        "distill's example budget); needed when methods has grounding_sft",
    )
    distill: DistillConfig = _f(help="MGSD stage 2: on-policy distillation")
    rl: RLConfig | None = _f(
        None,
        help="GRPO from the task reward (grpo: from grounding, in place of distillation; "
        "grpo_only: from the base); needed when methods has grpo or grpo_only",
    )
    evaluate: EvaluateConfig = _f(EvaluateConfig(), help="evaluation")
    tables: TablesConfig = _f(TablesConfig(), help="tables")
    plots: PlotsConfig = _f(PlotsConfig(), help="figures")
    resources: dict[str, Resources] = _f({}, help="Slurm / local resources per stage")
    methods: tuple[str, ...] = _f(METHODS, help="methods to train and evaluate")
    external_models: dict[str, ExternalModel] = _f(
        {},
        help="models evaluated as given beside the methods, by name: {name: {path, prompt_style, "
        "conditions}}; each is a row of every table and figure, marked external",
    )
    sweep: dict[str, dict[str, tuple[Any, ...]]] = _f(
        {},
        help="settings chosen on the validation split: per stage section (grounding, sft_direct, "
        "grounding_sft, distill, rl) the values to try of some of its keys, e.g. {distill: {lr: "
        "[1e-5, 3e-5, 1e-4]}}; every combination is trained and the best validation success is "
        "kept (a distillation sweep tunes mgsd; its ablations and replicates train with mgsd's "
        "choice; an rl sweep tunes grpo, and grpo_only and the replicates take its choice). The "
        "test sets are never read.",
    )
    replicates: dict[str, int] = _f(
        {},
        help="distillation and RL methods run with this many seeds in all (their section's "
        "seed, +1, ...), e.g. {mgsd: 3}; tables report the spread across seeds",
    )
    results_dir: str = _f("results", help="root folder of all runs")

    @property
    def root(self) -> Path:
        return Path(self.results_dir) / self.run


# ---------------------------------------------------------------- building and checking


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _build(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML value to type `tp`, raising ConfigError that names `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _build(inner, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _build(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _build(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:  # checked where it is used (sweep values: against their section's field)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            value = int(value)  # e.g. a command-line override, which arrives as text
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text, as people write it
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {_type_name(tp)} at {key}")  # a bug in this module


def _build_dataclass(cls: type, value: Any, key: str) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{key or cls.__name__}: expected a mapping, got {value!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(known))
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (known keys here: {', '.join(sorted(known))})"
        )
    kwargs = {}
    for name, f in known.items():
        sub = f"{key}.{name}" if key else name
        if name in value:
            v = _build(hints[name], value[name], sub)
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        else:
            raise ConfigError(f"missing key {sub} ({f.metadata.get('help', '')})")
        _check_range(v, f.metadata, sub)
        kwargs[name] = v
    return cls(**kwargs)


def _check_range(v: Any, meta: dict, key: str) -> None:
    values = v if isinstance(v, tuple) else (v,)
    for x in values:
        if "among" in meta and isinstance(x, str) and x not in meta["among"]:
            known = ", ".join(meta["among"])
            raise ConfigError(f"{key}: unknown {meta['what']} {x!r} (known: {known})")
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            continue
        if "ge" in meta and x < meta["ge"]:
            raise ConfigError(f"{key}: {x} is below the minimum {meta['ge']}")
        if "gt" in meta and x <= meta["gt"]:
            raise ConfigError(f"{key}: {x} must be greater than {meta['gt']}")
        if "le" in meta and x > meta["le"]:
            raise ConfigError(f"{key}: {x} is above the maximum {meta['le']}")
        if "lt" in meta and x >= meta["lt"]:
            raise ConfigError(f"{key}: {x} must be less than {meta['lt']}")


def check_scratch(s: ScratchConfig, key: str = "backbone.scratch") -> None:
    """The known traps of a Qwen3-VL config, checked before any model is built."""
    if s.head_dim % 2:
        raise ConfigError(f"{key}.head_dim: {s.head_dim} must be even")
    if sum(s.mrope_section) * 2 != s.head_dim:
        raise ConfigError(
            f"{key}.mrope_section: {list(s.mrope_section)} sums to {sum(s.mrope_section)}, "
            f"must be head_dim/2 = {s.head_dim // 2}"
        )
    if s.num_attention_heads % s.num_key_value_heads:
        raise ConfigError(
            f"{key}.num_key_value_heads: {s.num_key_value_heads} must divide "
            f"num_attention_heads = {s.num_attention_heads}"
        )
    bad = [i for i in s.deepstack_visual_indexes if not 0 <= i < s.vision_depth]
    if bad:
        raise ConfigError(
            f"{key}.deepstack_visual_indexes: {bad} not below vision_depth = {s.vision_depth}"
        )
    if math.isqrt(s.num_position_embeddings) ** 2 != s.num_position_embeddings:
        raise ConfigError(
            f"{key}.num_position_embeddings: {s.num_position_embeddings} is not a perfect square"
        )
    if s.vision_hidden_size % s.vision_num_heads:
        raise ConfigError(
            f"{key}.vision_num_heads: {s.vision_num_heads} must divide vision_hidden_size = "
            f"{s.vision_hidden_size}"
        )
    if len(s.deepstack_visual_indexes) > s.num_hidden_layers:
        raise ConfigError(
            f"{key}.deepstack_visual_indexes: {len(s.deepstack_visual_indexes)} indexes but only "
            f"{s.num_hidden_layers} text layers to add them to"
        )


def _check_config(c: Config) -> None:
    if not c.run or "/" in c.run or c.run.startswith("."):
        raise ConfigError(f"run: {c.run!r} must be a plain folder name")
    for name, p in c.data.puzzles.items():
        key = f"data.puzzles.{name}"
        if name not in PUZZLES:
            raise ConfigError(f"unknown key {key} (puzzles: {', '.join(PUZZLES)})")
        lo, hi = LEVEL_RANGE[name]
        if not p.levels:
            raise ConfigError(f"{key}.levels: give at least one side")
        for lv in p.levels:
            if not lo <= lv <= hi:
                raise ConfigError(f"{key}.levels: side {lv} outside {lo}-{hi}")
        if p.test_source not in ("generated", BENCHMARK_SOURCES.get(name)):
            raise ConfigError(
                f"{key}.test_source: {p.test_source!r} is not available for {name} "
                f"(generated{', ' + BENCHMARK_SOURCES[name] if name in BENCHMARK_SOURCES else ''})"
            )
        if p.test_source != "generated" and not c.data.benchmarks_dir:
            raise ConfigError(f"{key}.test_source: {p.test_source} needs data.benchmarks_dir")
        a, b = p.hole_fraction
        if not 0 <= a <= b < 1:
            raise ConfigError(f"{key}.hole_fraction: need 0 <= low <= high < 1, got {[a, b]}")
    if not c.data.puzzles:
        raise ConfigError("data.puzzles: configure at least one puzzle")
    for m in c.methods:
        if m not in METHODS:
            raise ConfigError(f"methods: unknown method {m!r} (known: {', '.join(METHODS)})")
    for name, ext in c.external_models.items():
        _check_external(name, ext)
    if "symbolic" in c.methods and "text" not in c.evaluate.conditions:
        raise ConfigError(
            "evaluate.conditions: the symbolic method is the base model under the text "
            "condition; add text or drop symbolic from methods"
        )
    for fmt in c.plots.formats:
        if fmt not in ("png", "pdf", "svg"):
            raise ConfigError(f"plots.formats: unknown format {fmt!r} (png, pdf, svg)")
    for stage in c.resources:
        if stage not in STAGES:
            raise ConfigError(f"unknown key resources.{stage} (stages: {', '.join(STAGES)})")
    if c.backbone.source == "scratch":
        check_scratch(c.backbone.scratch)
    if c.distill.dual_clip and c.distill.dual_clip <= 1:
        raise ConfigError(f"distill.dual_clip: {c.distill.dual_clip} must be 0 (off) or > 1")
    _check_sweep(c)
    for m, n in c.replicates.items():
        if m not in ON_POLICY_METHODS:
            raise ConfigError(
                f"unknown key replicates.{m} (distillation and RL methods: "
                f"{', '.join(ON_POLICY_METHODS)})"
            )
        if n < 1:
            raise ConfigError(f"replicates.{m}: {n} is below the minimum 1")
        if m not in c.methods:
            raise ConfigError(f"replicates.{m}: {m} is not in methods")
    if "grounding_sft" in c.methods and c.grounding_sft is None:
        raise ConfigError("methods: grounding_sft needs a grounding_sft section")
    for m in RL_METHODS:
        if m in c.methods and c.rl is None:
            raise ConfigError(f"methods: {m} needs an rl section")
    if "rl" in c.sweep and "grpo" not in c.methods:
        raise ConfigError("sweep.rl tunes grpo (grpo_only takes its choice): add grpo to methods")
    for stage in SFT_SECTIONS:
        t: TrainConfig | None = getattr(c, stage)
        if t is None:
            continue
        for task in t.mix or {}:
            if task not in TASKS:
                raise ConfigError(f"unknown key {stage}.mix.{task} (tasks: {', '.join(TASKS)})")
        if t.mix and not any(e.weight > 0 for e in t.mix.values()):
            raise ConfigError(f"{stage}.mix: give at least one task a weight above 0")
        if t.batch_size % t.grad_accum:
            raise ConfigError(
                f"{stage}.grad_accum: {t.grad_accum} must divide batch_size = {t.batch_size}"
            )


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_REPLICATE_NAME = re.compile(r"(.+)-seed\d+")  # mgsd.workflow.REPLICATE: models/<method>-seed<k>


def _check_external(name: str, ext: ExternalModel) -> None:
    key = f"external_models.{name}"
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{key}: {name!r} is not a plain name (letters, digits, '_', '.', '-'; it names the "
            "folder of its records and its rows)"
        )
    clash = _REPLICATE_NAME.fullmatch(name)
    if name in METHODS or (clash and clash.group(1) in METHODS):
        raise ConfigError(
            f"{key}: the name {name!r} clashes with the method "
            f"{name if name in METHODS else clash.group(1)!r}; give the external model another name"
        )
    if ext.conditions is not None:
        if not ext.conditions:
            raise ConfigError(f"{key}.conditions: give at least one condition (or null)")


SWEEPABLE = ("grounding", "sft_direct", "grounding_sft", "distill", "rl")


def _check_sweep(c: Config) -> None:
    """Every swept key exists in its section and every value is valid there."""
    for stage, keys in c.sweep.items():
        if stage not in SWEEPABLE:
            raise ConfigError(f"unknown key sweep.{stage} (sweepable: {', '.join(SWEEPABLE)})")
        section = getattr(c, stage)
        if section is None:
            raise ConfigError(f"sweep.{stage}: the {stage} section is not configured")
        if not keys:
            raise ConfigError(f"sweep.{stage}: give at least one key and its values")
        for key, values in keys.items():
            if not values:
                raise ConfigError(f"sweep.{stage}.{key}: give at least one value")
        for overrides in sweep_candidates(c, stage):
            for key, v in overrides.items():
                swept_section(section, {key: v}, f"sweep.{stage}.{key}")


def sweep_candidates(c: Config, stage: str) -> list[dict[str, Any]]:
    """The overrides of each candidate of a swept stage, in grid order ([{}] when not swept)."""
    keys = c.sweep.get(stage, {})
    grid: list[dict[str, Any]] = [{}]
    for key, values in keys.items():
        grid = [{**g, key: v} for g in grid for v in values]
    return grid


def swept_section(section: Any, overrides: dict[str, Any], key: str = "sweep") -> Any:
    """`section` with `overrides` applied and checked as the YAML would be."""
    raw = {**to_dict(section), **overrides}
    known = {f.name for f in dataclasses.fields(section)}
    for k in overrides:
        if k not in known:
            raise ConfigError(f"unknown key {key} (known keys here: {', '.join(sorted(known))})")
    return _build_dataclass(type(section), raw, key.rsplit(".", 1)[0])


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_inputs(c: Config, base: Path | str = ".") -> None:
    """The input paths a run reads exist (relative ones from `base`, the workflow's folder), so
    a missing folder stops the run before any job instead of failing inside one."""
    base = Path(base)
    benchmarks = [n for n, p in c.data.puzzles.items() if p.test_source != "generated"]
    if benchmarks and c.data.benchmarks_dir:
        path = base / c.data.benchmarks_dir
        if not path.is_dir():
            raise ConfigError(
                f"data.benchmarks_dir: {c.data.benchmarks_dir} is not a folder (needed by the "
                f"benchmark test sets of {', '.join(benchmarks)})"
            )
    if c.backbone.source == "pretrained":
        name = c.backbone.pretrained
        if not (base / name).exists() and not _HUB_ID.fullmatch(name):
            raise ConfigError(
                f"backbone.pretrained: {name} is neither a folder nor a hub id (org/name)"
            )
    for name, ext in c.external_models.items():
        check_external_model(ext.path, ext.prompt_style, base, f"external_models.{name}")


def is_local_model(path: str, base: Path | str = ".") -> bool:
    """Whether `path` names a local folder (from `base`) rather than a hub id."""
    return (Path(base) / path).exists() or not _HUB_ID.fullmatch(path)


def default_prompt_style(path: str, base: Path | str = ".") -> str:
    """compact for a folder made by mgsd (it holds mgsd_stage.json), else instruct."""
    return "compact" if (Path(base) / path / STAGE_FILE).is_file() else "instruct"


# What loading a model from the hub (or a folder not written by mgsd) needs beyond the core
# install: Qwen3-VL's processor builds a video processor, which imports torchvision.
PRETRAINED_PACKAGES = ("torchvision",)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def missing_packages(c: Config, base: Path | str = ".") -> list[str]:
    """One line per model of the run whose processor needs a package that is not installed
    (empty when nothing is missing): the pretrained backbone and the external models, unless
    they are folders written by mgsd (whose processor needs nothing more)."""
    models = []
    if c.backbone.source == "pretrained":
        models.append(("backbone.pretrained", c.backbone.pretrained))
    models += [(f"external_models.{n}.path", e.path) for n, e in c.external_models.items()]
    missing = [p for p in PRETRAINED_PACKAGES if not _installed(p)]
    if not missing:
        return []
    return [
        f"{key}: {path} loads a pretrained processor, which needs {', '.join(missing)}; install "
        f"it with pip install -e '.[pretrained]' (or the build that matches your torch)"
        for key, path in models
        if default_prompt_style(path, base) != "compact"
    ]


def check_external_model(path: str, style: str, base: Path | str = ".", key: str = "") -> None:
    """A model evaluated as given is a model folder or a hub id, and its prompt style fits it:
    compact prompts are mgsd's own short headers, which only models trained by mgsd know."""
    where = Path(base) / path
    if is_local_model(path, base):
        if not where.is_dir():
            what = "is a file, not a model folder" if where.exists() else "does not exist"
            raise ConfigError(
                f"{key}.path: {path} {what} (give a model folder or a hub id, org/name)"
            )
        if not (where / "config.json").is_file():
            raise ConfigError(f"{key}.path: {path} has no config.json (not a model folder)")
        if not any(where.glob("*.safetensors")):
            raise ConfigError(f"{key}.path: {path} has no *.safetensors weights")
    if style not in PROMPT_STYLES:
        raise ConfigError(f"{key}.prompt_style: {style!r} is not one of {', '.join(PROMPT_STYLES)}")
    if style == "compact" and default_prompt_style(path, base) != "compact":
        raise ConfigError(
            f"{key}.prompt_style: compact prompts are mgsd's own headers, known only to models "
            f"trained by mgsd (a folder with {STAGE_FILE}); {path} is not one: use instruct"
        )


def load(raw: dict) -> Config:
    """Validate the merged Snakemake config dict."""
    cfg = _build_dataclass(Config, raw, "")
    _check_config(cfg)
    return cfg


def load_file(*paths: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load and merge YAML files (later ones overlay earlier ones, as with --configfile), then
    the command-line `overrides` (`snakemake --config`, read by `command_line`)."""
    merged: dict = {}
    for p in paths:
        try:
            text = Path(p).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror}") from e
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {e}") from e
        if not isinstance(doc, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
        merged = merge(merged, doc)
    return load(merge(merged, command_line(overrides or {})))


def command_line(overrides: Mapping[str, Any]) -> dict:
    """Command-line overrides (`snakemake --config KEY=VALUE ...`) as the YAML they were written in.

    Snakemake reads each VALUE with YAML's base loader: a mapping stays a mapping, but every
    scalar in it arrives as text ('100', 'true', 'null'), and a value it cannot read arrives
    whole as a string. Each text is read again as YAML here: a KEY's whole value may be a
    mapping or a list (``grounding='{steps: 100}'``), merged into the files' section so that
    only the given keys change; a text inside a mapping or list is read as a scalar only (one
    that was quoted as a mapping stays text).
    """
    return {k: _reread(v, whole=True) for k, v in overrides.items()}


def _reread(value: Any, whole: bool = False) -> Any:
    if isinstance(value, Mapping):
        return {k: _reread(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reread(v) for v in value]
    if not isinstance(value, str):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # the key's check names it (e.g. "expected a mapping, got '{steps: 1'")
    if isinstance(parsed, (dict, list)) and not whole:
        return value
    return parsed


def merge(base: dict, over: dict) -> dict:
    """Recursive dict update, as Snakemake applies --configfile overlays."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(obj: Any) -> Any:
    """A section as plain JSON-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def section_json(obj: Any) -> str:
    """Compact, key-sorted JSON of a section: what a rule passes to its CLI (and reruns on)."""
    return json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"))


def section_keys(text: str, key: str) -> set[str]:
    """The keys a section's JSON (or @file) names itself, before defaults fill the rest."""
    raw = _section_raw(text, key)
    return set(raw) if isinstance(raw, dict) else set()


def _section_raw(text: str, key: str) -> Any:
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{key}: not valid JSON ({e})") from e


def load_section(cls: type, text: str, key: str) -> Any:
    """Rebuild one section from the JSON a rule passed on the command line (or a file path)."""
    return _build(cls, _section_raw(text, key), key)


def resources(cfg: Config, stage: str) -> Resources:
    return cfg.resources.get(stage, Resources())
