"""Training losses as pure tensor functions: supervised cross-entropy, on-policy distillation.

Legend: B batch (sequences), T reply positions, V vocabulary. Inputs are per-token tensors already
aligned on the reply: index t of `logits_BTV` is the distribution that scored token t of
`tokens_BT`. `mask_BT` is 1 on real reply tokens and 0 on padding and prompt positions; values
under mask 0 never change a loss or a gradient (they may even be NaN or inf).

Every loss returns `(loss, stats)`: a scalar to call `backward` on and a dict of plain floats
(unprefixed; the loop namespaces them, e.g. `distill/reverse_kl`). Losses are token means over the
batch they are given; `stats["tokens"]` lets a loop re-weight micro-batches of unequal size.

Logits may hold -inf outside the sampler's support (`mgsd.model.support.restrict`, applied
before any of these functions): every softmax here is then over the support alone.

Distillation: the student samples y, the teacher scores it, and
`A_t = log p_teacher(y_t) - log p_student_old(y_t)`. With ratio = 1, `-mean_t(A_t log p(y_t))` has
the gradient of a one-sample estimate of the per-token reverse KL(student || teacher), because
`E_y~p[(log p - log q)(y) grad log p(y)] = grad KL(p || q)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def _f32(x: Tensor) -> Tensor:
    """At least float32 (bf16 logits lose too much in log_softmax); float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()


def masked_mean(x_BT: Tensor, mask_BT: Tensor) -> Tensor:
    """Sum over positions with mask 1 / their count (0 if none; NaN off the mask is fine)."""
    m = mask_BT.bool()
    return torch.where(m, x_BT, 0).sum() / m.sum().clamp(min=1)


def token_logprobs(logits_BTV: Tensor, tokens_BT: Tensor) -> Tensor:
    """log p(token_t) under logits_t, in float32. Negative ids (e.g. -100) are read as 0: mask them.

    Memory: one float32 (B, T, V) temporary (about 1.2 GB for T = 2048, V = 151936, per sequence).
    """
    logits_BTV = _f32(logits_BTV)
    ids_BT1 = tokens_BT.clamp(min=0).unsqueeze(-1)
    picked_BT = logits_BTV.gather(-1, ids_BT1).squeeze(-1)
    return picked_BT - torch.logsumexp(logits_BTV, dim=-1)


def advantages(
    teacher_logprobs_BT: Tensor,
    student_old_logprobs_BT: Tensor,
    mask_BT: Tensor,
    reward_B: Tensor | None = None,
    reward_weight: float = 0.0,
    baseline_BT: Tensor | None = None,
) -> Tensor:
    """A_t = teacher - student_old (+ reward_weight x reward of the reply) - baseline_t; 0 off
    mask; detached. A baseline that does not depend on the sampled token (e.g. the expected
    advantage, `-token_reverse_kl`) leaves the expected gradient unchanged."""
    a_BT = _f32(teacher_logprobs_BT.detach()) - _f32(student_old_logprobs_BT.detach())
    if reward_weight:
        if reward_B is None:
            raise ValueError(f"reward_weight = {reward_weight} needs reward_B")
        a_BT = a_BT + reward_weight * _f32(reward_B.detach()).unsqueeze(-1)
    if baseline_BT is not None:
        a_BT = a_BT - _f32(baseline_BT.detach())
    return torch.where(mask_BT.bool(), a_BT, 0)


def sampled_reverse_kl_loss(
    student_logprobs_BT: Tensor,
    student_old_logprobs_BT: Tensor,
    advantages_BT: Tensor,
    mask_BT: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float = 0.0,
    *,
    teacher_logprobs_BT: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The paper's estimator: PPO-clipped `-min(ratio A, clip(ratio, 1 - lo, 1 + hi) A)`, token
    mean.

    `ratio = exp(logp - logp_old)`; advantages are detached. `clip_high` defaults to `clip_low`
    (symmetric); the reference code clips asymmetrically (0.2 / 0.3). `dual_clip` = c > 1 bounds
    the loss of a negative advantage by `-c A` (dual-clip PPO: a token whose ratio has run far
    up cannot be pushed down without bound); 0 is off. Stats: `reverse_kl` (token mean of
    logp_old - logp_teacher), `teacher_logprob`, `student_logprob` (of the sampling policy),
    `ratio_mean`, `clip_frac` (share of tokens whose gradient a clip cut off), `tokens`. Pass
    `teacher_logprobs_BT` when the advantage is not teacher - old (a reward, a baseline);
    otherwise the teacher is read back from A.
    """
    m = mask_BT.bool()
    loss_BT, clip_stats = clipped_policy_loss(
        student_logprobs_BT, student_old_logprobs_BT, advantages_BT, m, clip_low, clip_high,
        dual_clip,
    )  # fmt: skip
    loss = masked_mean(loss_BT, m)
    with torch.no_grad():
        old_BT = torch.where(m, student_old_logprobs_BT.detach(), 0)
        a_BT = torch.where(m, advantages_BT.detach(), 0)
        teacher_BT = old_BT + a_BT if teacher_logprobs_BT is None else teacher_logprobs_BT
        stats = {
            "reverse_kl": masked_mean(old_BT - teacher_BT, m).item(),
            "teacher_logprob": masked_mean(teacher_BT, m).item(),
            "student_logprob": masked_mean(old_BT, m).item(),
            **clip_stats,
        }
    return loss, stats


def clipped_policy_loss(
    logprobs_BT: Tensor,
    old_logprobs_BT: Tensor,
    advantages_BT: Tensor,
    mask_BT: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """Per-token PPO surrogate `-min(ratio A, clip(ratio, 1 - lo, 1 + hi) A)` (0 off the mask),
    with `ratio = exp(logp - logp_old)`, and its stats `ratio_mean`, `clip_frac`, `tokens`.

    Shared by distillation (A from the teacher) and RL (A from the group's rewards); see
    `sampled_reverse_kl_loss` for the options.
    """
    hi = clip_low if clip_high is None else clip_high
    if dual_clip and dual_clip <= 1:
        raise ValueError(f"dual_clip must be 0 (off) or > 1, got {dual_clip}")
    m = mask_BT.bool()
    logp_BT = torch.where(m, logprobs_BT, 0)
    old_BT = torch.where(m, old_logprobs_BT.detach(), 0)
    a_BT = torch.where(m, advantages_BT.detach(), 0)
    ratio_BT = torch.exp(logp_BT - old_BT)
    clipped_BT = ratio_BT.clamp(1 - clip_low, 1 + hi)
    loss_BT = -torch.minimum(ratio_BT * a_BT, clipped_BT * a_BT)
    dual_BT = torch.zeros_like(m)
    if dual_clip:
        dual_BT = (a_BT < 0) & (loss_BT > -dual_clip * a_BT)
        loss_BT = torch.where(dual_BT, -dual_clip * a_BT, loss_BT)
    with torch.no_grad():
        cut_BT = ((ratio_BT > 1 + hi) & (a_BT > 0)) | ((ratio_BT < 1 - clip_low) & (a_BT < 0))
        stats = {
            "ratio_mean": masked_mean(ratio_BT, m).item(),
            "clip_frac": masked_mean((cut_BT | dual_BT).to(ratio_BT.dtype), m).item(),
            "tokens": float(m.sum().item()),
        }
    return torch.where(m, loss_BT, 0), stats


def group_advantages(reward_B: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """GRPO's advantage of each reply: `(r - mean_g) / (std_g + eps)` within its group of
    `group_size` consecutive replies to one prompt (std over the group, population form), so
    every group has mean 0 and, unless all its rewards are equal (advantage 0: nothing to learn
    from), std about 1."""
    if reward_B.numel() % group_size:
        raise ValueError(f"{reward_B.numel()} rewards are not groups of {group_size}")
    r_GN = _f32(reward_B.detach()).view(-1, group_size)
    centred_GN = r_GN - r_GN.mean(-1, keepdim=True)
    return (centred_GN / (r_GN.std(-1, unbiased=False, keepdim=True) + eps)).flatten()


def k3_kl(logprobs_BT: Tensor, ref_logprobs_BT: Tensor, mask_BT: Tensor) -> Tensor:
    """Per-token KL(policy || reference) estimate on the policy's own samples, Schulman's k3:
    `exp(ref - logp) - (ref - logp) - 1` (never negative, unbiased); 0 off the mask. The
    gradient flows through `logprobs_BT`; the reference is detached."""
    m = mask_BT.bool()
    d_BT = torch.where(m, _f32(ref_logprobs_BT.detach()) - _f32(logprobs_BT), 0)
    return torch.where(m, torch.exp(d_BT) - d_BT - 1, 0)


def grpo_loss(
    logprobs_BT: Tensor,
    old_logprobs_BT: Tensor,
    advantage_B: Tensor,
    mask_BT: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    *,
    ref_logprobs_BT: Tensor | None = None,
    kl_weight: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """GRPO: the clipped surrogate with each reply's advantage on all its tokens, plus
    `kl_weight` x the k3 KL to a reference policy; token mean over the batch.

    Stats: `policy_loss`, `kl` (when a reference is given), `ratio_mean`, `clip_frac`, `tokens`.
    """
    m = mask_BT.bool()
    a_BT = advantage_B.detach()[:, None].expand(m.shape)
    loss_BT, stats = clipped_policy_loss(logprobs_BT, old_logprobs_BT, a_BT, m, clip_low, clip_high)
    policy = masked_mean(loss_BT, m)
    loss = policy
    stats = {"policy_loss": policy.item(), **stats}
    if ref_logprobs_BT is not None:
        kl = masked_mean(k3_kl(logprobs_BT, ref_logprobs_BT, m), m)
        stats["kl"] = kl.item()
        if kl_weight:
            loss = loss + kl_weight * kl
    elif kl_weight:
        raise ValueError(f"kl_weight = {kl_weight} needs ref_logprobs_BT")
    return loss, stats


def _reverse_kl_rows(student_RV: Tensor, teacher_RV: Tensor, idx_C: Tensor) -> Tensor:
    """KL(student || teacher) of rows idx_C; the rows are gathered here so that checkpointing
    keeps no copy of them for the backward pass.

    Logits may be -inf outside the sampler's support (`mgsd.model.support.restrict`): such ids
    have student probability 0 and add nothing (neither NaN to the value nor to a gradient).
    """
    logp_CV = torch.log_softmax(_f32(student_RV[idx_C]), dim=-1)
    logq_CV = torch.log_softmax(_f32(teacher_RV[idx_C]), dim=-1)
    diff_CV = torch.where(torch.isfinite(logp_CV), logp_CV - logq_CV, 0)
    return (logp_CV.exp() * diff_CV).sum(-1)


def _kl_per_row(student_RV: Tensor, teacher_RV: Tensor, rows_N: Tensor, chunk: int) -> Tensor:
    """(N,) KL(student || teacher) of rows `rows_N`, `chunk` rows at a time (checkpointed when
    the student needs a gradient, so the float32 temporaries of one chunk are all it keeps)."""
    parts = [_f32(student_RV[:0]).sum(-1)]  # empty, on the graph: an all-padding batch backwards
    for i in range(0, rows_N.numel(), chunk):
        idx_C = rows_N[i : i + chunk]
        if student_RV.requires_grad:
            parts.append(
                checkpoint(_reverse_kl_rows, student_RV, teacher_RV, idx_C, use_reentrant=False)
            )
        else:
            parts.append(_reverse_kl_rows(student_RV, teacher_RV, idx_C))
    return torch.cat(parts)


def full_reverse_kl_loss(
    student_logits_BTV: Tensor,
    teacher_logits_BTV: Tensor,
    mask_BT: Tensor,
    chunk_tokens: int = 1024,
) -> tuple[Tensor, dict[str, float]]:
    """Exact `sum_v p_s(v) (log p_s(v) - log p_t(v))` at every reply token, token mean.

    Differentiated directly (the teacher is detached), in float32. Memory: the masked positions
    are gathered `chunk_tokens` rows at a time, and each chunk's float32 temporaries (about
    4 x chunk x V x 4 bytes: 2.5 GB at 1024 x 151936) are recomputed in the backward pass
    instead of kept, so the peak beyond the logits themselves is one chunk rather than several
    copies of N x V (40 GB each in float32 for 32 x 2048 tokens at V = 151936). Both (B, T, V)
    logits must still fit: at that size, compute the loss per micro-batch. Stats: `reverse_kl`,
    `tokens`.
    """
    rows_N = mask_BT.bool().flatten().nonzero().squeeze(1)
    student_RV = student_logits_BTV.flatten(0, 1)  # a view: rows are gathered chunk by chunk
    teacher_RV = teacher_logits_BTV.detach().flatten(0, 1)
    n = rows_N.numel()
    loss = _kl_per_row(student_RV, teacher_RV, rows_N, chunk_tokens).sum() / max(n, 1)
    return loss, {"reverse_kl": loss.item(), "tokens": float(n)}


@torch.no_grad()
def token_reverse_kl(
    student_logits_BTV: Tensor,
    teacher_logits_BTV: Tensor,
    mask_BT: Tensor,
    chunk_tokens: int = 1024,
) -> Tensor:
    """(B, T) exact reverse KL(student || teacher) at each reply token, 0 off the mask; no grad.

    The expectation of the sampled advantage is `E_y~p_s[log p_t(y) - log p_s(y)] = -KL_t`:
    subtracting it (`kl_baseline`) leaves the expected gradient as it is and removes the part of
    every advantage that is negative on average.
    """
    m = mask_BT.bool()
    rows_N = m.flatten().nonzero().squeeze(1)
    kl_N = _kl_per_row(
        student_logits_BTV.detach().flatten(0, 1), teacher_logits_BTV.flatten(0, 1), rows_N,
        chunk_tokens,
    )  # fmt: skip
    out = torch.zeros(m.numel(), dtype=kl_N.dtype, device=kl_N.device)
    out[rows_N] = kl_N
    return out.view(m.shape)


def forward_kl_topk_loss(
    student_logits_BTV: Tensor, teacher_logits_BTV: Tensor, mask_BT: Tensor, k: int
) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy from the teacher's top-k, renormalised, to the student: token mean of
    `-sum_{v in topk} q_k(v) log p_s(v)` with `q_k = softmax(teacher logits over its top k)`.

    A forward-KL anchor (up to the teacher's entropy, a constant): it pulls the student's mass
    onto the tokens the teacher finds likely at the student's own prefixes, which the sampled
    reverse-KL estimator only reaches through the tokens the student happens to draw. Stats:
    `forward_ce`, `teacher_topk_mass` (how much of the teacher's mass its top k hold).
    """
    m = mask_BT.bool()
    rows_N = m.flatten().nonzero().squeeze(1)
    t_NV = _f32(teacher_logits_BTV.detach().flatten(0, 1)[rows_N])
    top_NK, ids_NK = t_NV.topk(min(k, t_NV.shape[-1]), dim=-1)
    q_NK = torch.softmax(top_NK, dim=-1)
    logp_NV = torch.log_softmax(_f32(student_logits_BTV.flatten(0, 1)[rows_N]), dim=-1)
    logp_NK = logp_NV.gather(-1, ids_NK)
    # ids with q = 0 (a teacher top k past its support) add nothing, not 0 x -inf
    ce_N = -torch.where(q_NK > 0, q_NK * logp_NK, 0).sum(-1)
    n = rows_N.numel()
    loss = ce_N.sum() / max(n, 1)
    with torch.no_grad():
        mass = torch.exp(torch.logsumexp(top_NK, -1) - torch.logsumexp(t_NV, -1))
        stats = {"forward_ce": loss.item(), "teacher_topk_mass": mass.mean().item() if n else 0.0}
    return loss, stats


def sft_loss(logits_BTV: Tensor, labels_BT: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Next-token cross-entropy, token mean, with the Hugging Face convention.

    `labels_BT` is aligned with the input ids (not shifted): the logits at position t predict
    label t + 1, and labels of -100 (prompt, padding) are ignored. Computed in float32.
    Stats: `loss`, `token_accuracy` (greedy next token right), `tokens`.
    """
    logits_NV = _f32(logits_BTV[:, :-1]).flatten(0, 1)
    labels_N = labels_BT[:, 1:].flatten()
    keep_N = labels_N != -100
    n = int(keep_N.sum().item())
    total = F.cross_entropy(logits_NV, labels_N, ignore_index=-100, reduction="sum")
    loss = total / max(n, 1)
    with torch.no_grad():
        right = ((logits_NV.argmax(-1) == labels_N) & keep_N).sum().item()
    stats = {"loss": loss.item(), "token_accuracy": right / max(n, 1), "tokens": float(n)}
    return loss, stats
