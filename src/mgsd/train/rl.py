r"""`mgsd rl`: GRPO from the task reward, the RL baseline beside on-policy distillation.

    mgsd rl --method grpo --init results/default/models/grounding/model \
        --train .../train.parquet --val .../val.parquet --config '<the rl section as JSON>' \
        --out .../models/grpo/model --metrics .../metrics.json --log .../train_log.jsonl \
        --work results/default/resume/grpo

Each step (the loop, its sampler support, checkpoints, resume, signals and logs are
`mgsd.train.onpolicy`'s, shared with `mgsd distill`):
1. B training instances; n replies each from the student on the picture prompt (no gradient);
2. each reply's reward from the puzzle's own scorer: `success_reward` x success +
   `progress_reward` x progress rate (VisualPlanning's progress reward: the share of the optimal
   plan's length made good before the first mistake) - `unparsed_penalty` when no plan can be read
   - `illegal_penalty` when the plan takes an illegal action;
3. GRPO advantages: each reward against its group of n (`(r - mean) / (std + eps)`; a group of
   equal rewards teaches nothing and gets 0), on every token of the reply;
4. `updates_per_batch` optimizer steps on the PPO-clipped surrogate, token mean, plus
   `kl_weight` x the k3 estimate of KL(policy || initial policy) when it is above 0.
The budget in sampled replies, steps x batch_size x samples_per_prompt, is distillation's, so the
two can be matched (`examples_seen` in the metrics).
"""

from __future__ import annotations

import argparse
import time

import torch

from mgsd import cli_args
from mgsd.config import RLConfig
from mgsd.puzzles.base import Score
from mgsd.train import losses, onpolicy

KEYS = (
    "reward", "success", "progress", "illegal", "unparsed", "advantage_abs", "zero_groups",
    "policy_loss", "kl", "clip_frac", "ratio_mean", "student_logprob", "parse_rate",
    "reply_tokens", "sampler_gap", "dead_mass",
)  # fmt: skip


def reward(sc: Score, cfg: RLConfig) -> float:
    """The reward of one scored reply (the weights are the rl section's)."""
    r = cfg.success_reward * sc.success + cfg.progress_reward * sc.progress_rate
    if not sc.parsed:
        r -= cfg.unparsed_penalty
    elif sc.illegal_kind:
        r -= cfg.illegal_penalty
    return r


def rewards_of(batch: onpolicy.Batch, scores: list[Score], cfg: RLConfig) -> list[float]:
    """The reward of every sampled reply, from the puzzle's own scorer."""
    return [reward(sc, cfg) for sc in scores]


def rl_step(model, frozen, processor, batch, cfg: RLConfig, acc, allowed_V, *, update: int):
    """The GRPO loss of this process's samples (not yet scaled). Update 0 fixes what the batch
    keeps for the later updates: the rewards, the advantages and the sampling policy's log-probs
    (the PPO ratio's denominator)."""
    replies = onpolicy.reply_ids(batch.gens, processor.tokenizer.eos_token_id)
    with acc.autocast():
        s = onpolicy.score(model, processor, batch.examples, replies, allowed_V)
    mask_BT, logp_BT = s.valid, s.logprobs()
    c = batch.cache
    if update == 0:
        scores = onpolicy.score_samples(batch.flat, batch.gens)
        sampled = onpolicy.sample_stats(scores, batch.gens, s, logp_BT, acc.device)
        rewards_B = torch.tensor(rewards_of(batch, scores, cfg), device=acc.device)
        c["advantage_B"] = losses.group_advantages(
            rewards_B, cfg.samples_per_prompt, cfg.advantage_eps
        )
        c["old_BT"] = logp_BT.detach()
        n = max(len(scores), 1)
        zero = (rewards_B.view(-1, cfg.samples_per_prompt).std(-1) == 0).float().mean()
        c["stats"] = {
            "reward": rewards_B.mean().item(),
            "success": sampled.pop("sample_success"),
            "progress": sum(sc.progress_rate for sc in scores) / n,
            "illegal": sum(bool(sc.parsed and sc.illegal_kind) for sc in scores) / n,
            "unparsed": sum(not sc.parsed for sc in scores) / n,
            "advantage_abs": c["advantage_B"].abs().mean().item(),
            "zero_groups": zero.item(),
            "student_logprob": losses.masked_mean(logp_BT.detach(), mask_BT).item(),
            **sampled,
        }
        if "reference" in frozen:
            t0 = time.perf_counter()
            with torch.no_grad(), acc.autocast():
                ref = onpolicy.score(
                    frozen["reference"], processor, batch.examples, replies, allowed_V
                )
            c["ref_BT"], c["ref_seconds"] = ref.logprobs(), time.perf_counter() - t0
    loss, st = losses.grpo_loss(
        logp_BT, c["old_BT"], c["advantage_B"], mask_BT, cfg.clip_low, cfg.clip_high,
        ref_logprobs_BT=c.get("ref_BT"), kl_weight=cfg.kl_weight,
    )  # fmt: skip
    frozen_s = c.get("ref_seconds", 0.0) if update == 0 else 0.0
    return loss, {**c["stats"], **st, "frozen_seconds": frozen_s}


def stage(args: argparse.Namespace, cfg: RLConfig) -> onpolicy.Stage:
    """GRPO as a stage of the shared on-policy loop: the initial policy is its frozen model
    (the KL's reference), loaded only when `kl_weight` is above 0."""
    return onpolicy.Stage(
        name="rl",
        step=rl_step,
        keys=KEYS,
        postfix="reward",
        frozen={"reference": args.init} if cfg.kl_weight else {},
        frozen_label="reference",
        fingerprint=(args.style,),
        card={"reward": "success, progress rate, unparsed and illegal penalties"},
        updates=cfg.updates_per_batch,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    return cli_args.rl().parse_args(argv)


def main(argv: list[str]) -> int:
    return onpolicy.main(parse_args(argv), RLConfig, "rl", stage)
