"""The loop every on-policy stage shares: on-policy distillation (`mgsd distill`) and RL (`mgsd rl`).

Each step: B training instances, a function of (seed, step); n replies each sampled from the
student on the picture prompt (no gradient); the stage's `step` turns them into a loss (teacher
scoring, rewards, ...), and the optimizer steps `updates` times on that batch. Every log-prob is
over the sampler's support (`mgsd.model.support`). Checkpoints, resume, signals, `accelerate
launch` and logs work as in `mgsd train-sft`; the log keys are `<stage>/<stat>`, `train/*` and
`perf/*` (tokens per second of sampling, of the frozen models' scoring and of the update).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mgsd import puzzles
from mgsd.config import ConfigError, OnPolicyConfig, load_section
from mgsd.io import write_atomic_json
from mgsd.model import support
from mgsd.model.batching import ReplyLogits, collate_score, reply_logits
from mgsd.model.generate import Generation, generate
from mgsd.model.load import load_model
from mgsd.model.lora import compile_layers, freeze_vision
from mgsd.model.tasks import (
    Example,
    Instance,
    load_instances,
    make_example,
    task_success,
    validation_set,
)
from mgsd.puzzles.base import Score
from mgsd.train import common, losses, resume


def score(model, processor, examples, reply_ids: list[list[int]], allowed_V) -> ReplyLogits:
    """The logits of every reply token under `model` and the examples' prompts, over the
    sampler's support: position t predicts reply token t whatever the prompt's length in front
    (a teacher's prompt and the student's differ)."""
    return reply_logits(model, collate_score(processor, examples, reply_ids), allowed_V)


def sample(student, processor, insts, cfg: OnPolicyConfig, style, seed, device, autocast=None):
    """n replies per instance from the student on the picture prompt; returns the flat lists
    (the n replies to one instance next to each other)."""
    examples = [
        make_example("student", x, style, with_reply=False)
        for x in insts
        for _ in range(cfg.samples_per_prompt)
    ]
    flat = [x for x in insts for _ in range(cfg.samples_per_prompt)]
    student.eval()
    with torch.no_grad(), (autocast or contextlib.nullcontext)():
        gens = generate(
            student,
            processor,
            examples,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            seed=seed,
        )
    student.train()
    return flat, examples, gens


@dataclass
class Batch:
    """One step's samples; `cache` keeps what a stage computes once per batch (rewards, the
    sampling policy's log-probs) across its updates."""

    flat: list[Instance]
    examples: list[Example]
    gens: list[Generation]
    cache: dict[str, Any] = field(default_factory=dict)


def reply_ids(gens: list[Generation], eos_id: int) -> list[list[int]]:
    """The sampled token ids of each reply; an empty reply is scored as the end of turn."""
    return [list(g.token_ids) or [eos_id] for g in gens]


def score_samples(flat: list[Instance], gens: list[Generation]) -> list[Score]:
    """The puzzle's own score of every sampled reply (parsed, success, progress, illegal)."""
    return [puzzles.get(x.puzzle).score(x.state, g.text) for x, g in zip(flat, gens, strict=True)]


def sample_stats(
    scores: list[Score], gens: list[Generation], s: ReplyLogits, logp_BT: torch.Tensor, device
) -> dict[str, float]:
    """What every on-policy stage logs of its samples (`scores`: `score_samples`'): the task
    success and parse rate of the replies, their length, the sampler's log-probs against the
    trainer's (a sampler that does not draw from the model being trained shows here first; bf16
    kernels: a few hundredths) and the mass the raw student puts on ids it can never sample (the
    drift the support stops)."""
    mask_BT = s.valid
    sampled_BT = torch.zeros(logp_BT.shape, dtype=logp_BT.dtype)  # filled on the host, moved once
    for b, g in enumerate(gens):
        sampled_BT[b, : len(g.logprobs)] = torch.tensor(g.logprobs, dtype=sampled_BT.dtype)
    sampled_BT = sampled_BT.to(device)
    drawn = torch.tensor([bool(g.token_ids) for g in gens], device=device)
    gap = losses.masked_mean((sampled_BT - logp_BT.detach()).abs(), mask_BT & drawn[:, None])
    n = max(len(scores), 1)
    return {
        "sample_success": sum(sc.success for sc in scores) / n,
        "parse_rate": sum(sc.parsed for sc in scores) / n,
        "reply_tokens": sum(len(g.token_ids) or 1 for g in gens) / n,
        "sampler_gap": gap.item(),
        "dead_mass": losses.masked_mean(s.dead_mass, mask_BT).item(),
    }


# step(model, frozen, processor, batch, cfg, acc, allowed_V, update) -> (loss, stats); stats
# hold "tokens" (this process's reply tokens) and "frozen_seconds" (time spent scoring with the
# frozen models, taken out of the update's time)
Step = Callable[..., tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Stage:
    """What an on-policy stage brings to the shared loop."""

    name: str  # log namespace and progress-bar label: "distill", "rl"
    step: Step
    keys: tuple[str, ...]  # stats averaged over processes and logged as <name>/<key>
    postfix: str  # the stat the progress bar shows
    frozen: dict[str, str]  # role -> model folder or hub id of each frozen model (teacher, ...)
    frozen_label: str  # perf/<label>_tokens_per_s: what the frozen models' scoring is called
    fingerprint: tuple[str, ...]  # what else (beyond config and input files) makes a run this run
    card: dict[str, Any]  # written into the model card beside stage, method, init and config
    updates: int = 1  # optimizer steps per batch of samples
    offload: bool = False  # keep the frozen models on the CPU while the student samples


def train(args: argparse.Namespace, cfg: OnPolicyConfig, stage: Stage) -> dict:
    acc = common.setup(cfg.seed)
    train_set = load_instances(args.train)
    val_set = validation_set(load_instances(args.val), cfg.val_instances, cfg.seed)
    model, processor = load_model(args.init, device=acc.device, trainable=True)
    if not cfg.train_vision:
        freeze_vision(model)
    if cfg.compile:
        compile_layers(model)
    rows = support.output_rows(model)
    frozen = {}
    for role, ref in stage.frozen.items():
        frozen[role], _ = load_model(ref, device=acc.device, trainable=False)
        frozen[role].eval().requires_grad_(False)
        if support.output_rows(frozen[role]) != rows:
            raise ConfigError(
                f"the {role} {ref} scores {support.output_rows(frozen[role])} ids, the student "
                f"{args.init} {rows}: they must share one tokenizer"
            )
    allowed_V = support.support_mask(processor.tokenizer, rows, acc.device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = common.make_optimizer(trainable, cfg.lr, cfg.weight_decay)
    sched = common.make_schedule(opt, cfg.steps * stage.updates, cfg.warmup_ratio, cfg.schedule)
    model, opt = acc.prepare(model, opt)
    # a checkpoint is resumed only by the run that wrote it (same config, same inputs)
    fingerprint = resume.run_fingerprint(
        args.method, args.config, *stage.fingerprint,
        files=[args.init, *stage.frozen.values(), *args.train, *args.val],
    )  # fmt: skip
    if cfg.batch_size % acc.num_processes:
        raise ConfigError(
            f"{stage.name}.batch_size: {cfg.batch_size} is not divisible by "
            f"{acc.num_processes} processes"
        )
    run = common.open_run(acc, cfg, args, args.method, model, opt, sched, trainable, fingerprint)
    raw = acc.unwrap_model(model)

    def validated() -> dict:
        return validate_student(raw, processor, val_set, args.style, cfg, acc.device)

    t_start, last = time.perf_counter(), {}
    for step in range(run.start, cfg.steps):
        ids = common.shard(
            common.batch_indices(len(train_set), cfg.batch_size, cfg.seed, step),
            acc.process_index,
            acc.num_processes,
        )
        insts = [train_set[i] for i in ids]
        t0 = time.perf_counter()
        for m in frozen.values() if stage.offload else ():
            m.to("cpu")
        with common.explain_oom(stage.name):
            batch = Batch(
                *sample(
                    raw,
                    processor,
                    insts,
                    cfg,
                    args.style,
                    seed=cfg.seed * 1_000_003 + step * 1009 + acc.process_index,
                    device=acc.device,
                    autocast=acc.autocast,
                )
            )
            t_sample = time.perf_counter() - t0
            for m in frozen.values() if stage.offload else ():
                m.to(acc.device)
            t1, t_frozen = time.perf_counter(), 0.0
            for update in range(stage.updates):
                loss, st = stage.step(
                    model, frozen, processor, batch, cfg, acc, allowed_V, update=update
                )
                t_frozen += st.get("frozen_seconds", 0.0)
                own = torch.tensor(st["tokens"], device=acc.device)
                global_tokens = acc.reduce(own, reduction="sum").item()
                acc.backward(loss * st["tokens"] / max(global_tokens, 1) * acc.num_processes)
                grad_norm = run.updater.step()
        t_update = time.perf_counter() - t1 - t_frozen
        sampled = sum(len(g.token_ids) for g in batch.gens)
        run.meter.update(sampled)
        vals = acc.reduce(
            torch.tensor([st.get(k, 0.0) for k in stage.keys], device=acc.device), "mean"
        )
        last = {
            f"{stage.name}/{k}": v.item() for k, v in zip(stage.keys, vals, strict=True) if k in st
        }
        last.update(
            {
                f"{stage.name}/loss": loss.item(),
                "train/lr": sched.get_last_lr()[0],
                "perf/sample_tokens_per_s": sampled / max(t_sample, 1e-9),
                "perf/update_tokens_per_s": st["tokens"] * stage.updates / max(t_update, 1e-9),
                "perf/sample_s": t_sample,
                "perf/update_s": t_update,
            }
        )
        if frozen:
            label = stage.frozen_label
            last[f"perf/{label}_tokens_per_s"] = st["tokens"] / max(t_frozen, 1e-9)
            last[f"perf/{label}_s"] = t_frozen
        shown = last.get(f"{stage.name}/{stage.postfix}", float("nan"))
        common.end_step(run, step + 1, last, grad_norm, {stage.postfix: f"{shown:.3f}"}, validated)
    final = common.end_run(run, validated)
    card = {"stage": stage.name, "method": args.method, "init": args.init, **stage.card}
    common.finish(acc, raw, processor, args, card, cfg, run.log)
    return {
        "method": args.method,
        "steps": cfg.steps,
        "examples_seen": cfg.steps * cfg.batch_size * cfg.samples_per_prompt,
        "seed": cfg.seed,
        "seconds": time.perf_counter() - t_start,
        **final,
        **{k: v for k, v in last.items() if k.startswith(f"{stage.name}/")},
    }


@torch.no_grad()
def validate_student(model, processor, insts, style, cfg: OnPolicyConfig, device) -> dict:
    model.eval()
    wins = 0
    for i in range(0, len(insts), cfg.batch_size):
        chunk = insts[i : i + cfg.batch_size]
        gens = generate(
            model,
            processor,
            [make_example("student", x, style, with_reply=False) for x in chunk],
            max_new_tokens=cfg.max_new_tokens,
        )
        wins += sum(task_success("student", x, g.text) for x, g in zip(chunk, gens, strict=True))
    model.train()
    return {"val/success": wins / max(len(insts), 1)}


def main(
    args: argparse.Namespace,
    section_type: type[OnPolicyConfig],
    section: str,
    make_stage: Callable[[argparse.Namespace, Any], Stage],
) -> int:
    """A stage's command: its config section (with the replicate's seed), the loop, the metrics
    (written by the main process once the model is)."""
    try:
        cfg = load_section(section_type, args.config, section)
        cfg = dataclasses.replace(cfg, seed=cfg.seed + args.seed_offset)
        metrics = train(args, cfg, make_stage(args, cfg))
    except common.STOP_ERRORS as e:
        print(f"mgsd {section}: {e}", file=sys.stderr)
        return 1
    from accelerate import PartialState

    if PartialState().is_main_process:
        write_atomic_json(args.metrics, metrics)
    return 0
