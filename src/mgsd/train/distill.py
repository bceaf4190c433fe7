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
The loop (sampling, checkpoints, resume, signals, `accelerate launch`, logs) is
`mgsd.train.onpolicy`'s, shared with `mgsd rl`.
"""

from __future__ import annotations

import argparse
import time

import torch

from mgsd import cli_args
from mgsd.config import DistillConfig
from mgsd.model.tasks import make_example
from mgsd.train import losses, onpolicy

LOSSES = cli_args.LOSSES
KEYS = (
    "reverse_kl", "teacher_logprob", "student_logprob", "sample_success", "parse_rate",
    "reply_tokens", "clip_frac", "ratio_mean", "sampler_gap", "dead_mass", "forward_ce",
)  # fmt: skip


def distill_step(
    model, teacher, processor, flat, examples, gens, cfg, acc, allowed_V, *,
    loss_kind: str, teacher_sees_plan: bool, style: str,
):  # fmt: skip
    """Teacher scoring and the student's loss for this process's samples (not yet scaled).

    `loss_kind`: one of `LOSSES`; `teacher_sees_plan`: the teacher's prompt holds the reference plan;
    `style`: the prompt style of the teacher's examples.
    """
    replies = onpolicy.reply_ids(gens, processor.tokenizer.eos_token_id)
    task = "teacher" if teacher_sees_plan else "symbolic"
    t_examples = [make_example(task, x, style, with_reply=False) for x in flat]
    t0 = time.perf_counter()
    with torch.no_grad(), acc.autocast():
        t = onpolicy.score(teacher, processor, t_examples, replies, allowed_V)
    t_teacher = time.perf_counter() - t0
    with acc.autocast():
        s = onpolicy.score(model, processor, examples, replies, allowed_V)
    if not (torch.equal(s.valid, t.valid) and torch.equal(s.tokens, t.tokens)):
        raise RuntimeError("teacher and student reply positions differ: alignment bug")
    mask_BT = s.valid
    logp_BT, teacher_BT = s.logprobs(), t.logprobs()
    scores = onpolicy.score_samples(flat, gens)
    rewards_B = torch.tensor([float(sc.success) for sc in scores], device=acc.device)
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
    st.update(
        onpolicy.sample_stats(scores, gens, s, logp_BT, acc.device), teacher_seconds=t_teacher
    )
    return loss, st


def stage(args: argparse.Namespace, cfg: DistillConfig) -> onpolicy.Stage:
    """Distillation as a stage of the shared on-policy loop: the teacher is its frozen model."""

    def step(model, frozen, processor, batch, cfg, acc, allowed_V, *, update):
        loss, st = distill_step(
            model, frozen["teacher"], processor, batch.flat, batch.examples, batch.gens, cfg,
            acc, allowed_V, loss_kind=args.loss, teacher_sees_plan=args.teacher_sees_plan,
            style=args.style,
        )  # fmt: skip
        return loss, {**st, "frozen_seconds": st["teacher_seconds"]}

    return onpolicy.Stage(
        name="distill",
        step=step,
        keys=KEYS,
        postfix="reverse_kl",
        frozen={"teacher": args.teacher},
        frozen_label="teacher",
        fingerprint=(args.style, args.loss, str(args.teacher_sees_plan)),
        card={
            "teacher": args.teacher,
            "teacher_sees_plan": args.teacher_sees_plan,
            "loss": args.loss,
        },
        offload=cfg.teacher_offload,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    return cli_args.distill().parse_args(argv)


def main(argv: list[str]) -> int:
    return onpolicy.main(parse_args(argv), DistillConfig, "distill", stage)
