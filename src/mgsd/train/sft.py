r"""`mgsd train-sft`: the supervised stages, one loop.

    mgsd train-sft --stage grounding --init results/default/models/base/model \
        --train results/default/data/*/train.parquet --val results/default/data/*/val.parquet \
        --config '<the grounding section as JSON>' --out results/default/models/grounding/model \
        --metrics .../metrics.json --log .../train_log.jsonl --work results/default/resume/grounding

Stages (the task each trains is in `mgsd.model.tasks`):
- `symbolic_pretrain` (scratch backbones): state as text -> state + plan. Its output is the
  "base" model: the frozen teacher, the symbolic upper bound and the student's start.
- `grounding` (MGSD stage 1): picture -> state text. LoRA or full fine-tuning.
- `sft_direct` (baseline): picture -> state + optimal plan.
- `grounding_sft` (ablation): as sft_direct, from the grounded model.

A stage's `mix` trains several tasks at once (`mgsd.model.tasks.Mixture`): each example of a
batch draws its task by weight, a function of (seed, step). The scratch backbones' stage 0
(`symbolic_pretrain`) is such a mix; grounding mixes in text-planning replay.

The loss is the token mean over the whole global batch (all micro-batches, all processes), so
`accelerate launch --num_processes N` follows the same curve as one process. Checkpoints go to
`--work` every `checkpoint_every` steps and on SIGTERM / SIGUSR1 (exit code 75); rerunning the
same command resumes. LoRA adapters are merged at the end: the output is a plain model folder.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import torch

from mgsd import cli_args
from mgsd.config import ConfigError, TrainConfig, load_section
from mgsd.io import write_atomic_json
from mgsd.model.batching import collate_train, to_device
from mgsd.model.generate import generate
from mgsd.model.load import load_model
from mgsd.model.lora import apply_lora, compile_layers, freeze_vision, merge_lora
from mgsd.model.tasks import (
    Mixture,
    load_instances,
    make_example,
    stage_task,
    task_success,
    validation_set,
)
from mgsd.train import common, losses, resume

TEXT_TASKS = ("symbolic", "teacher")  # tasks whose prompts hold no picture


@torch.no_grad()
def validate(model, processor, insts, task, style, cfg: TrainConfig, device, also=()) -> dict:
    """Validation loss of `task` (token mean) and greedy success of `task` and of the tasks in
    `also` (``val/<task>/success``) on `insts`."""
    model.eval()
    total, tokens = 0.0, 0
    bs = max(1, cfg.batch_size // cfg.grad_accum)
    wins = dict.fromkeys([task, *also], 0)
    for i in range(0, len(insts), bs):
        chunk = insts[i : i + bs]
        batch = to_device(
            collate_train(
                processor, [make_example(task, x, style, end=cfg.supervise_end) for x in chunk]
            ),
            device,
        )
        labels = batch.pop("labels")
        _, st = losses.sft_loss(model(**batch, use_cache=False).logits, labels)
        total, tokens = total + st["loss"] * st["tokens"], tokens + st["tokens"]
        for t in wins:
            examples = [
                make_example(t, x, style, with_reply=False, variant=i + j)
                for j, x in enumerate(chunk)
            ]
            gens = generate(model, processor, examples, max_new_tokens=cfg.val_max_new_tokens)
            wins[t] += sum(
                task_success(t, x, g.text, variant=i + j)
                for j, (x, g) in enumerate(zip(chunk, gens, strict=True))
            )
    model.train()
    n = max(len(insts), 1)
    out = {"val/loss": total / max(tokens, 1), "val/success": wins[task] / n}
    out.update({f"val/{t}/success": w / n for t, w in wins.items() if t != task})
    return out


def train(args: argparse.Namespace, cfg: TrainConfig) -> dict:
    task = stage_task(args.stage, cfg.grounding_prompt)
    acc = common.setup(cfg.seed)
    train_set = load_instances(args.train)
    val_set = validation_set(load_instances(args.val), cfg.val_instances, cfg.seed)
    mixture = Mixture(cfg.mix, task, train_set, cfg.seed)
    # greedy validation of every task trained, and of the real task whenever pictures are seen
    pictures = any(t not in TEXT_TASKS for t in mixture.tasks)
    also = [t for t in dict.fromkeys([*mixture.tasks, "student"]) if t != task]
    also = [t for t in also if pictures or t in TEXT_TASKS]
    model, processor = load_model(args.init, device=acc.device, trainable=True)
    # text-only tasks give the vision tower no gradient, which DDP refuses (and a single
    # process would leave it unchanged anyway): freeze it
    train_vision = cfg.train_vision and pictures
    if cfg.finetune == "lora":
        model = apply_lora(model, cfg.lora, train_vision)
    elif not train_vision:
        freeze_vision(model)
    if cfg.compile:
        compile_layers(model)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = common.make_optimizer(trainable, cfg.lr, cfg.weight_decay)
    sched = common.make_schedule(opt, cfg.steps, cfg.warmup_ratio, cfg.schedule)
    model, opt = acc.prepare(model, opt)
    # a checkpoint is resumed only by the run that wrote it (same config, same inputs)
    fingerprint = resume.run_fingerprint(
        args.stage, args.config, args.style, files=[args.init, *args.train, *args.val]
    )
    micro = cfg.batch_size // cfg.grad_accum // acc.num_processes
    if micro < 1 or cfg.batch_size % (cfg.grad_accum * acc.num_processes):
        raise ConfigError(
            f"{args.stage}.batch_size: {cfg.batch_size} is not divisible by "
            f"grad_accum x processes = {cfg.grad_accum * acc.num_processes}"
        )
    run = common.open_run(acc, cfg, args, args.stage, model, opt, sched, trainable, fingerprint)
    raw = acc.unwrap_model(model)

    def validated() -> dict:
        return validate(raw, processor, val_set, task, args.style, cfg, acc.device, also)

    t_start, last = time.perf_counter(), {}

    def make_batches(step: int) -> list[dict]:
        """This process's micro-batches of `step` (a pure function of the step)."""
        slots = common.shard(
            mixture.slots(
                common.batch_indices(len(train_set), cfg.batch_size, cfg.seed, step), step
            ),
            acc.process_index,
            acc.num_processes,
        )
        examples = [
            make_example(
                x.task, train_set[x.index], args.style, end=cfg.supervise_end, variant=x.variant
            )
            for x in slots
        ]
        return [
            collate_train(processor, examples[j : j + micro])
            for j in range(0, len(examples), micro)
        ]

    steps = range(run.start, cfg.steps)
    batches_of = common.prefetched(make_batches, steps, cfg.data_workers)
    for step, batches in zip(steps, batches_of, strict=True):
        # normalise by the reply tokens of the whole global batch: DDP averages gradients over
        # processes, so each process scales its share by the number of processes
        own = torch.tensor(
            float(sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)), device=acc.device
        )
        global_tokens = acc.reduce(own, reduction="sum").item()
        loss_sum, acc_sum = 0.0, 0.0
        for j, batch in enumerate(batches):
            batch = to_device(batch, acc.device)
            labels = batch.pop("labels")
            ctx = acc.no_sync(model) if j < len(batches) - 1 else contextlib.nullcontext()
            with ctx, acc.autocast(), common.explain_oom(args.stage):
                loss, st = losses.sft_loss(model(**batch, use_cache=False).logits, labels)
                acc.backward(loss * st["tokens"] / global_tokens * acc.num_processes)
            loss_sum += st["loss"] * st["tokens"]
            acc_sum += st["token_accuracy"] * st["tokens"]
            run.meter.update(batch["input_ids"].numel())
        grad_norm = run.updater.step()
        stats = acc.reduce(torch.tensor([loss_sum, acc_sum], device=acc.device), "sum")
        last = {
            "train/loss": stats[0].item() / global_tokens,
            "train/token_accuracy": stats[1].item() / global_tokens,
            "train/lr": sched.get_last_lr()[0],
            "train/tokens": global_tokens,
        }
        postfix = {"loss": f"{last['train/loss']:.4f}"}
        common.end_step(run, step + 1, last, grad_norm, postfix, validated)
    final = common.end_run(run, validated)
    out = merge_lora(raw) if cfg.finetune == "lora" and acc.is_main_process else raw
    common.finish(acc, out, processor, args, {"stage": args.stage, "init": args.init}, cfg, run.log)
    return {
        "stage": args.stage,
        "steps": cfg.steps,
        "examples_seen": cfg.steps * cfg.batch_size,
        "seconds": time.perf_counter() - t_start,
        **final,
        **{k: v for k, v in last.items() if k.startswith("train/")},
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    return cli_args.train_sft().parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        cfg = load_section(TrainConfig, args.config, args.stage)
        metrics = train(args, cfg)
    except common.STOP_ERRORS as e:
        print(f"mgsd train-sft: {e}", file=sys.stderr)
        return 1
    if metrics:
        from accelerate import PartialState

        if PartialState().is_main_process:
            write_atomic_json(args.metrics, metrics)
    return 0
