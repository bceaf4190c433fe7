r"""`mgsd distill`: on-policy distillation from a symbolic teacher (MGSD stage 2), one loop.

    mgsd distill --method mgsd --init results/default/models/grounding/model \
        --teacher results/default/models/base/model --teacher-sees-plan \
        --loss sampled_reverse_kl --train .../train.parquet --val .../val.parquet \
        --config '<the distill section as JSON>' --out .../models/mgsd/model \
        --metrics .../metrics.json --log .../train_log.jsonl --work results/default/resume/mgsd

Each step (the maths is in `mgsd.train.losses`):
1. B training instances, a function of (seed, step); n replies each sampled from the student on
   the picture prompt (no gradient);
2. the frozen teacher scores the same reply tokens given the symbolic prompt (the state text,
   plus the reference plan with `--teacher-sees-plan`);
3. `A_t = log p_teacher(y_t) - log p_student_old(y_t)` and one update: the clipped policy
   gradient on A (`sampled_reverse_kl`, the paper) or the exact reverse KL over the vocabulary
   (`full_reverse_kl`, ablation). There is one update per batch, so the "old" student is the
   current one and its log-probs come from the same forward pass (ratio = 1).
Every log-prob is over the sampler's support (`mgsd.model.support`): ids the sampler never
draws get -inf before the log-softmax, in the student, the teacher and the exact KL alike;
`distill/dead_mass` logs what the raw student puts on them (the drift monitor). Options: a
per-token baseline (`kl_baseline`), asymmetric and dual clipping, a forward-KL term to the
teacher's top-k (`forward_kl_weight`).
The task reward of the samples is logged, and enters the advantage only with `reward_weight`.
Checkpoints, resume, signals and `accelerate launch` work as in `mgsd train-sft`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time

import torch

from mgsd import cli_args, puzzles
from mgsd.config import ConfigError, DistillConfig, load_section, to_dict
from mgsd.io import write_atomic_json
from mgsd.model import support
from mgsd.model.batching import ReplyLogits, collate_score, reply_logits
from mgsd.model.generate import generate
from mgsd.model.load import load_model, save_model
from mgsd.model.lora import compile_layers, freeze_vision
from mgsd.model.tasks import load_instances, make_example, task_success, validation_set
from mgsd.train import common, losses, resume

LOSSES = cli_args.LOSSES


def score(model, processor, examples, reply_ids: list[list[int]], allowed_V) -> ReplyLogits:
    """The logits of every reply token under `model` and the examples' prompts, over the
    sampler's support: position t predicts reply token t whatever the prompt's length in front
    (the teacher's and the student's prompts differ)."""
    return reply_logits(model, collate_score(processor, examples, reply_ids), allowed_V)


def sample(student, processor, insts, cfg: DistillConfig, style, seed, device, autocast=None):
    """n replies per instance from the student on the picture prompt; returns the flat lists."""
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


def distill_step(
    model, teacher, processor, flat, examples, gens, cfg, acc, allowed_V, *,
    loss_kind: str, teacher_sees_plan: bool, style: str,
):  # fmt: skip
    """Teacher scoring and the student's loss for this process's samples (not yet scaled).

    `loss_kind`: one of `LOSSES`; `teacher_sees_plan`: the teacher's prompt holds the reference plan;
    `style`: the prompt style of the teacher's examples.
    """
    replies = [list(g.token_ids) or [processor.tokenizer.eos_token_id] for g in gens]
    task = "teacher" if teacher_sees_plan else "symbolic"
    t_examples = [make_example(task, x, style, with_reply=False) for x in flat]
    t0 = time.perf_counter()
    with torch.no_grad(), acc.autocast():
        t = score(teacher, processor, t_examples, replies, allowed_V)
    t_teacher = time.perf_counter() - t0
    with acc.autocast():
        s = score(model, processor, examples, replies, allowed_V)
    if not (torch.equal(s.valid, t.valid) and torch.equal(s.tokens, t.tokens)):
        raise RuntimeError("teacher and student reply positions differ: alignment bug")
    mask_BT = s.valid
    logp_BT, teacher_BT = s.logprobs(), t.logprobs()
    rewards_B = torch.tensor(
        [
            float(puzzles.get(x.puzzle).score(x.state, g.text).success)
            for x, g in zip(flat, gens, strict=True)
        ],
        device=acc.device,
    )
    if loss_kind == "full_reverse_kl":
        loss, st = losses.full_reverse_kl_loss(s.logits, t.logits, mask_BT)
        st = {
            **st,
            "teacher_logprob": losses.masked_mean(teacher_BT, mask_BT).item(),
            "student_logprob": losses.masked_mean(logp_BT.detach(), mask_BT).item(),
        }
    else:
        baseline_BT = None
        if cfg.kl_baseline:  # the advantage's expectation under the student: -KL_t
            baseline_BT = -losses.token_reverse_kl(s.logits, t.logits, mask_BT)
        adv_BT = losses.advantages(
            teacher_BT, logp_BT.detach(), mask_BT, rewards_B, cfg.reward_weight, baseline_BT
        )
        loss, st = losses.sampled_reverse_kl_loss(
            logp_BT, logp_BT.detach(), adv_BT, mask_BT, cfg.clip_low, cfg.clip_high,
            cfg.dual_clip, teacher_logprobs_BT=teacher_BT,
        )  # fmt: skip
    if cfg.forward_kl_weight:
        forward, fst = losses.forward_kl_topk_loss(
            s.logits, t.logits, mask_BT, cfg.forward_kl_top_k
        )
        loss = loss + cfg.forward_kl_weight * forward
        st.update(fst)
    # the sampler's log-prob of each token against the trainer's: a sampler that does not draw
    # from the model being trained shows here first (bf16 kernels: a few hundredths)
    sampled_BT = torch.zeros(logp_BT.shape, dtype=logp_BT.dtype)  # filled on the host, moved once
    for b, g in enumerate(gens):
        sampled_BT[b, : len(g.logprobs)] = torch.tensor(g.logprobs, dtype=sampled_BT.dtype)
    sampled_BT = sampled_BT.to(acc.device)
    drawn_BT = mask_BT & torch.tensor([bool(g.token_ids) for g in gens], device=acc.device)[:, None]
    gap = losses.masked_mean((sampled_BT - logp_BT.detach()).abs(), drawn_BT).item()
    parsed = [
        puzzles.get(x.puzzle).parse_answer(g.text) is not None
        for x, g in zip(flat, gens, strict=True)
    ]
    st.update(
        sample_success=rewards_B.mean().item(),
        parse_rate=sum(parsed) / len(parsed),
        reply_tokens=sum(map(len, replies)) / len(replies),
        sampler_gap=gap,
        # what the raw student puts on ids it can never sample (the drift the support stops)
        dead_mass=losses.masked_mean(s.dead_mass, mask_BT).item(),
        teacher_seconds=t_teacher,
    )
    return loss, st


def train(args: argparse.Namespace, cfg: DistillConfig) -> dict:
    acc = common.setup(cfg.seed)
    train_set = load_instances(args.train)
    val_set = validation_set(load_instances(args.val), cfg.val_instances, cfg.seed)
    model, processor = load_model(args.init, device=acc.device, trainable=True)
    if not cfg.train_vision:
        freeze_vision(model)
    if cfg.compile:
        compile_layers(model)
    teacher, _ = load_model(args.teacher, device=acc.device, trainable=False)
    teacher.eval().requires_grad_(False)
    rows = support.output_rows(model)
    if support.output_rows(teacher) != rows:
        raise ConfigError(
            f"the teacher {args.teacher} scores {support.output_rows(teacher)} ids, the student "
            f"{args.init} {rows}: they must share one tokenizer"
        )
    allowed_V = support.support_mask(processor.tokenizer, rows, acc.device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = common.make_optimizer(trainable, cfg.lr, cfg.weight_decay)
    sched = common.make_schedule(opt, cfg.steps, cfg.warmup_ratio, cfg.schedule)
    model, opt = acc.prepare(model, opt)
    # a checkpoint is resumed only by the run that wrote it (same config, same inputs)
    fingerprint = resume.run_fingerprint(
        args.method, args.config, args.style, args.loss, str(args.teacher_sees_plan),
        files=[args.init, args.teacher, *args.train, *args.val],
    )  # fmt: skip
    lock = resume.lock_work_dir(args.work, acc)  # noqa: F841 (held until the process ends)
    ckpt = resume.resume_checkpoint(args.work, fingerprint, acc)
    start = resume.load_checkpoint(ckpt, model, opt, sched, acc) if ckpt else 0
    if ckpt:
        print(f"resuming {args.method} from {ckpt} (step {start} of {cfg.steps})", file=sys.stderr)
    log, stop = common.JsonlLogger(args.log, start, cfg=cfg, name=args.method), resume.StopSignal()
    meter, bar = common.Meter(acc.device), common.progress(cfg.steps, start, args.method)
    raw = acc.unwrap_model(model)
    if cfg.batch_size % acc.num_processes:
        raise ConfigError(
            f"distill.batch_size: {cfg.batch_size} is not divisible by "
            f"{acc.num_processes} processes"
        )
    updater = common.Updater(acc, opt, sched, trainable, cfg.grad_clip, args.method)
    t_start, last = time.perf_counter(), {}
    for step in range(start, cfg.steps):
        ids = common.shard(
            common.batch_indices(len(train_set), cfg.batch_size, cfg.seed, step),
            acc.process_index,
            acc.num_processes,
        )
        insts = [train_set[i] for i in ids]
        t0 = time.perf_counter()
        if cfg.teacher_offload:
            teacher.to("cpu")
        with common.explain_oom("distill"):
            flat, examples, gens = sample(
                raw,
                processor,
                insts,
                cfg,
                args.style,
                seed=cfg.seed * 1_000_003 + step * 1009 + acc.process_index,
                device=acc.device,
                autocast=acc.autocast,
            )
            t_sample = time.perf_counter() - t0
            if cfg.teacher_offload:
                teacher.to(acc.device)
            t1 = time.perf_counter()
            loss, st = distill_step(
                model, teacher, processor, flat, examples, gens, cfg, acc, allowed_V,
                loss_kind=args.loss, teacher_sees_plan=args.teacher_sees_plan, style=args.style,
            )  # fmt: skip
            own = torch.tensor(st["tokens"], device=acc.device)
            global_tokens = acc.reduce(own, reduction="sum").item()
            acc.backward(loss * st["tokens"] / max(global_tokens, 1) * acc.num_processes)
        grad_norm = updater.step()
        t_update = time.perf_counter() - t1 - st["teacher_seconds"]
        sampled = sum(len(g.token_ids) for g in gens)
        meter.update(sampled)
        done = step + 1
        keys = (
            "reverse_kl",
            "teacher_logprob",
            "student_logprob",
            "sample_success",
            "parse_rate",
            "reply_tokens",
            "clip_frac",
            "ratio_mean",
            "sampler_gap",
            "dead_mass",
            "forward_ce",
        )
        vals = acc.reduce(torch.tensor([st.get(k, 0.0) for k in keys], device=acc.device), "mean")
        last = {f"distill/{k}": v.item() for k, v in zip(keys, vals, strict=True) if k in st}
        last.update(
            {
                "distill/loss": loss.item(),
                "train/lr": sched.get_last_lr()[0],
                "perf/sample_tokens_per_s": sampled / max(t_sample, 1e-9),
                "perf/teacher_tokens_per_s": st["tokens"] / max(st["teacher_seconds"], 1e-9),
                "perf/update_tokens_per_s": st["tokens"] / max(t_update, 1e-9),
                "perf/sample_s": t_sample,
                "perf/teacher_s": st["teacher_seconds"],
                "perf/update_s": t_update,
            }
        )
        last.update({"train/grad_norm": grad_norm, "train/skipped_steps": updater.skipped})
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            if acc.is_main_process:
                last.update(validate_student(raw, processor, val_set, args.style, cfg, acc.device))
            acc.wait_for_everyone()
        if done % cfg.log_every == 0 or done == cfg.steps:
            log.log(done, {**last, **meter.stats()})
        bar.update()
        bar.set_postfix(kl=f"{last['distill/reverse_kl']:.3f}", refresh=False)
        resume.checkpoint_if_due(
            stop, acc, done, cfg.steps, cfg.checkpoint_every, args.work, model, opt, sched,
            fingerprint,
        )  # fmt: skip
    bar.close()
    stop.restore()  # main() may run inside another program (tests): give SIGTERM back
    final = {}
    if acc.is_main_process:
        final = validate_student(raw, processor, val_set, args.style, cfg, acc.device)
        log.log(cfg.steps, final)
        save_model(
            raw,
            processor,
            args.out,
            {
                "stage": "distill",
                "method": args.method,
                "init": args.init,
                "teacher": args.teacher,
                "teacher_sees_plan": args.teacher_sees_plan,
                "loss": args.loss,
                "config": to_dict(cfg),
            },
        )
        if not cfg.keep_checkpoints:  # the model is written: they can only fill the disk
            resume.remove_checkpoints(args.work)
    acc.wait_for_everyone()
    log.close()
    if acc.is_main_process:
        common.publish_log(args.log, args.final_log)
    return {
        "method": args.method,
        "steps": cfg.steps,
        "examples_seen": cfg.steps * cfg.batch_size * cfg.samples_per_prompt,
        "seed": cfg.seed,
        "seconds": time.perf_counter() - t_start,
        **final,
        **{k: v for k, v in last.items() if k.startswith("distill/")},
    }


@torch.no_grad()
def validate_student(model, processor, insts, style, cfg: DistillConfig, device) -> dict:
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    return cli_args.distill().parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        cfg = load_section(DistillConfig, args.config, "distill")
        cfg = dataclasses.replace(cfg, seed=cfg.seed + args.seed_offset)
        metrics = train(args, cfg)
    except common.STOP_ERRORS as e:
        print(f"mgsd distill: {e}", file=sys.stderr)
        return 1
    from accelerate import PartialState

    if PartialState().is_main_process:
        write_atomic_json(args.metrics, metrics)
    return 0
