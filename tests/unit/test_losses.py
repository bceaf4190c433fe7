"""The losses of mgsd.train.losses against maths identities, on random tensors (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from mgsd.train.losses import (
    advantages,
    forward_kl_topk_loss,
    full_reverse_kl_loss,
    group_advantages,
    grpo_loss,
    k3_kl,
    sampled_reverse_kl_loss,
    sft_loss,
    token_logprobs,
    token_reverse_kl,
)

D = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=D) * 1.5


def _mask(B: int, T: int) -> torch.Tensor:
    """Reply tokens 1, a prompt (first column of row 0) and padding (tail of row 1) 0."""
    m = torch.ones(B, T)
    m[0, 0] = 0
    m[1, T - 2 :] = 0
    return m


def _brute_reverse_kl(s_BTV, t_BTV, mask_BT) -> float:
    total, n = 0.0, 0
    B, T, V = s_BTV.shape
    for b in range(B):
        for t in range(T):
            if not mask_BT[b, t]:
                continue
            zs = [math.exp(x) for x in s_BTV[b, t].tolist()]
            zt = [math.exp(x) for x in t_BTV[b, t].tolist()]
            ps, pt = [z / sum(zs) for z in zs], [z / sum(zt) for z in zt]
            total += sum(ps[v] * (math.log(ps[v]) - math.log(pt[v])) for v in range(V))
            n += 1
    return total / n


def test_token_logprobs_is_log_softmax_gather():
    logits = _logits(2, 4, 6)
    tokens = torch.randint(0, 6, (2, 4), generator=_gen(1))
    got = token_logprobs(logits, tokens)
    for b in range(2):
        for t in range(4):
            z = logits[b, t].tolist()
            want = z[tokens[b, t]] - math.log(sum(math.exp(x) for x in z))
            assert got[b, t].item() == pytest.approx(want, abs=1e-12)
    low = token_logprobs(logits.to(torch.bfloat16), tokens)
    assert low.dtype == torch.float32  # never computed in bf16


def test_full_reverse_kl_equals_brute_force_sum():
    s, t, m = _logits(2, 5, 7, seed=1), _logits(2, 5, 7, seed=2), _mask(2, 5)
    loss, stats = full_reverse_kl_loss(s, t, m, chunk_tokens=3)
    assert loss.item() == pytest.approx(_brute_reverse_kl(s, t, m), abs=1e-12)
    assert stats["tokens"] == m.sum().item()
    assert stats["reverse_kl"] == pytest.approx(loss.item())


def test_full_reverse_kl_chunking_keeps_gradient():
    s, t, m = _logits(2, 5, 7, seed=1).requires_grad_(), _logits(2, 5, 7, seed=2), _mask(2, 5)
    (g_small,) = torch.autograd.grad(full_reverse_kl_loss(s, t, m, chunk_tokens=1)[0], s)
    (g_big,) = torch.autograd.grad(full_reverse_kl_loss(s, t, m, chunk_tokens=100)[0], s)
    assert torch.allclose(g_small, g_big, atol=1e-14)
    assert g_big.abs().sum() > 0


def test_full_reverse_kl_nonnegative_and_zero_for_equal_models():
    for seed in range(5):
        s, t = _logits(3, 4, 9, seed=seed), _logits(3, 4, 9, seed=seed + 10)
        assert full_reverse_kl_loss(s, t, torch.ones(3, 4))[0].item() > 0
    s = _logits(3, 4, 9).requires_grad_()
    loss, _ = full_reverse_kl_loss(s, s.detach().clone(), torch.ones(3, 4))
    (grad,) = torch.autograd.grad(loss, s)
    assert loss.item() == 0
    assert grad.abs().max() < 1e-15  # p - p * sum(p): zero up to rounding


def _sample(logits_TV: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n independent replies, token t drawn from softmax(logits_TV[t])."""
    probs_TV = torch.softmax(logits_TV.detach(), -1)
    return torch.multinomial(probs_TV, n, replacement=True, generator=_gen(seed)).T  # (n, T)


def _surrogate(student_TV, teacher_TV, tokens_NT):
    """The distillation loss on N sampled replies, as the loop computes it (ratio = 1)."""
    n, T = tokens_NT.shape
    logp = token_logprobs(student_TV.expand(n, -1, -1), tokens_NT)
    teacher = token_logprobs(teacher_TV.expand(n, -1, -1), tokens_NT)
    mask = torch.ones(n, T)
    a = advantages(teacher, logp.detach(), mask)
    return sampled_reverse_kl_loss(logp, logp.detach(), a, mask)


def test_sampled_estimate_matches_full_kl_in_expectation():
    s, t = _logits(3, 6, seed=3), _logits(3, 6, seed=4)
    tokens = _sample(s, 200_000, seed=5)
    _, stats = _surrogate(s, t, tokens)
    per_reply = token_logprobs(s.expand(len(tokens), -1, -1), tokens) - token_logprobs(
        t.expand(len(tokens), -1, -1), tokens
    )
    sigma = per_reply.mean(1).std().item() / math.sqrt(len(tokens))  # Monte Carlo error
    exact = full_reverse_kl_loss(s[None], t[None], torch.ones(1, 3))[0].item()
    assert abs(stats["reverse_kl"] - exact) < 5 * sigma
    assert exact > 50 * sigma  # the check can tell a right estimate from zero


def test_sampled_gradient_matches_full_kl_gradient_in_expectation():
    s, t = _logits(3, 5, seed=6).requires_grad_(), _logits(3, 5, seed=7)
    (exact,) = torch.autograd.grad(full_reverse_kl_loss(s[None], t[None], torch.ones(1, 3))[0], s)
    groups = []
    for g in range(50):  # 50 batches of 4000 replies: their spread gives the Monte Carlo error
        loss, _ = _surrogate(s, t, _sample(s, 4000, seed=100 + g))
        groups.append(torch.autograd.grad(loss, s)[0])
    grads = torch.stack(groups)
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(len(groups))
    assert torch.all((mean - exact).abs() < 5 * se), (mean, exact, se)
    assert exact.abs().max() > 20 * se.max()  # a wrong sign or scale would fail


def test_ratio_one_loss_is_minus_mean_advantage():
    logp = torch.randn(2, 5, generator=_gen(8), dtype=D)
    teacher = torch.randn(2, 5, generator=_gen(9), dtype=D)
    m = _mask(2, 5)
    a = advantages(teacher, logp, m)
    loss, stats = sampled_reverse_kl_loss(logp, logp, a, m)
    want = -(a * m).sum() / m.sum()
    assert loss.item() == pytest.approx(want.item(), abs=1e-12)
    assert stats["reverse_kl"] == pytest.approx(want.item(), abs=1e-12)
    assert stats["teacher_logprob"] == pytest.approx(((teacher * m).sum() / m.sum()).item())
    assert stats["ratio_mean"] == 1 and stats["clip_frac"] == 0 and stats["tokens"] == 7


def test_masked_positions_never_contribute():
    B, T, V = 2, 5, 7
    m = _mask(B, T)
    off = ~m.bool()

    def run(s_logits, teacher, old, adv_noise):
        s_logits = s_logits.clone().requires_grad_()
        logp = token_logprobs(s_logits, tokens)
        a = advantages(teacher, old, m) + adv_noise
        loss, stats = sampled_reverse_kl_loss(logp, old, a, m, teacher_logprobs_BT=teacher)
        (grad,) = torch.autograd.grad(loss, s_logits)
        return loss, stats, grad

    tokens = torch.randint(0, V, (B, T), generator=_gen(10))
    s, teacher, old = _logits(B, T, V, seed=11), _logits(B, T, seed=12), _logits(B, T, seed=13)
    base = run(s, teacher, old, torch.zeros(B, T))
    s2 = s.clone()
    s2[off] = 1e3 * torch.randn(int(off.sum()), V, generator=_gen(14), dtype=D)
    nan = torch.where(off, torch.nan, 0.0).to(D)
    changed = run(s2, teacher + nan, old - nan, nan)
    assert changed[0].item() == base[0].item() and changed[1] == base[1]
    assert torch.equal(changed[2], base[2]) and torch.all(base[2][off] == 0)

    full = _logits(B, T, V, seed=15).requires_grad_()
    loss1, _ = full_reverse_kl_loss(full, s, m)
    (g1,) = torch.autograd.grad(loss1, full)
    full2 = full.detach().clone()
    full2[off] = torch.nan
    full2.requires_grad_()
    loss2, _ = full_reverse_kl_loss(full2, s + nan[..., None], m)
    (g2,) = torch.autograd.grad(loss2, full2)
    assert loss1.item() == loss2.item() and torch.equal(g1, g2) and torch.all(g1[off] == 0)


def test_teacher_equal_to_student_gives_exactly_zero_update():
    logits = _logits(2, 5, 7, seed=16).requires_grad_()
    tokens = torch.randint(0, 7, (2, 5), generator=_gen(17))
    logp = token_logprobs(logits, tokens)
    m = _mask(2, 5)
    a = advantages(logp.detach().clone(), logp.detach(), m)
    loss, stats = sampled_reverse_kl_loss(logp, logp.detach(), a, m)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.all(grad == 0) and stats["reverse_kl"] == 0


@pytest.mark.parametrize(
    ("log_ratio", "adv", "cut"),
    [
        (0.5, 1.0, True),
        (-0.5, -1.0, True),
        (0.5, -1.0, False),
        (-0.5, 1.0, False),
        (0.1, 1.0, False),
    ],
)
def test_clipping_cuts_gradient_only_outside_the_trust_region(log_ratio, adv, cut):
    old = torch.full((1, 4), -2.0, dtype=D)
    logp = (old + log_ratio).requires_grad_()
    a = torch.full((1, 4), adv, dtype=D)
    loss, stats = sampled_reverse_kl_loss(logp, old, a, torch.ones(1, 4), clip_low=0.2)
    (grad,) = torch.autograd.grad(loss, logp)
    assert torch.all(grad == 0) == cut
    assert stats["clip_frac"] == float(cut)
    assert stats["ratio_mean"] == pytest.approx(math.exp(log_ratio))


def test_advantages_reward_and_mask():
    teacher, old, m = _logits(2, 5, seed=18), _logits(2, 5, seed=19), _mask(2, 5)
    reward = torch.tensor([1.0, 0.0], dtype=D)
    assert torch.equal(advantages(teacher, old, m, reward), (teacher - old) * m)  # weight 0
    a = advantages(teacher, old, m, reward, reward_weight=0.5)
    assert torch.allclose(a, (teacher - old + 0.5 * reward[:, None]) * m)
    assert not a.requires_grad
    with pytest.raises(ValueError, match="reward_B"):
        advantages(teacher, old, m, reward_weight=0.5)
    nan = torch.where(m.bool(), 0.0, torch.nan).to(D)  # e.g. a teacher that never saw padding
    assert torch.equal(advantages(teacher + nan, old - nan, m), (teacher - old) * m)


def test_full_reverse_kl_does_not_train_the_teacher():
    s, t = _logits(2, 5, 7, seed=22).requires_grad_(), _logits(2, 5, 7, seed=23).requires_grad_()
    full_reverse_kl_loss(s, t, _mask(2, 5))[0].backward()
    assert t.grad is None and s.grad.abs().sum() > 0


def test_sft_loss_is_shifted_cross_entropy_ignoring_minus_100():
    logits = _logits(2, 6, 5, seed=20).requires_grad_()
    labels = torch.randint(0, 5, (2, 6), generator=_gen(21))
    labels[:, :2] = -100  # prompt
    labels[1, 5] = -100  # padding
    loss, stats = sft_loss(logits, labels)
    terms = []
    for b in range(2):
        for t in range(5):
            y = labels[b, t + 1].item()
            if y != -100:
                z = logits[b, t].tolist()
                terms.append(math.log(sum(math.exp(x) for x in z)) - z[y])
    assert loss.item() == pytest.approx(sum(terms) / len(terms), abs=1e-12)
    assert stats["tokens"] == len(terms) == 7
    greedy = logits[:, :-1].argmax(-1) == labels[:, 1:]
    assert stats["token_accuracy"] == pytest.approx(greedy.sum().item() / 7)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.all(grad[:, -1] == 0) and torch.all(grad[:, 0] == 0)  # no label to predict


# ---------------------------------------------------------------- the support and the stabilisers


def _restricted(logits_BTV: torch.Tensor, dead: list[int]) -> torch.Tensor:
    out = logits_BTV.clone()
    out[..., dead] = float("-inf")
    return out


def test_full_reverse_kl_over_a_support_is_the_kl_of_the_restricted_softmaxes():
    """-inf on ids outside the support (what `support.restrict` writes): the value is the KL of
    the softmaxes over the other ids, and neither it nor the gradient holds a NaN."""
    dead = [0, 5, 6]
    s = _restricted(_logits(2, 5, 7, seed=30), dead).requires_grad_()
    t = _restricted(_logits(2, 5, 7, seed=31), dead)
    m = _mask(2, 5)
    live = [v for v in range(7) if v not in dead]
    want = _brute_reverse_kl(s.detach()[..., live], t[..., live], m)
    loss, _ = full_reverse_kl_loss(s, t, m, chunk_tokens=2)
    assert loss.item() == pytest.approx(want, abs=1e-12)
    (grad,) = torch.autograd.grad(loss, s)
    assert torch.isfinite(grad).all() and torch.all(grad[..., dead] == 0)
    assert grad[..., live].abs().sum() > 0
    kl_BT = token_reverse_kl(s, t, m)
    assert torch.isfinite(kl_BT).all() and kl_BT.sum().item() / m.sum() == pytest.approx(want)


def test_token_reverse_kl_is_the_exact_kl_at_each_position():
    s, t, m = _logits(2, 5, 7, seed=32), _logits(2, 5, 7, seed=33), _mask(2, 5)
    kl_BT = token_reverse_kl(s, t, m, chunk_tokens=3)
    for b in range(2):
        for pos in range(5):
            one = torch.ones(1, 1)
            want = _brute_reverse_kl(s[b : b + 1, pos : pos + 1], t[b : b + 1, pos : pos + 1], one)
            assert kl_BT[b, pos].item() == pytest.approx(want if m[b, pos] else 0.0, abs=1e-12)


def test_kl_baseline_keeps_the_expected_gradient_and_lowers_its_variance():
    """A - (-KL_t): the baseline is the advantage's expectation under the student, so the mean
    gradient is the exact KL's; its spread across batches is smaller."""
    s, t = _logits(3, 5, seed=34).requires_grad_(), _logits(3, 5, seed=35)
    (exact,) = torch.autograd.grad(full_reverse_kl_loss(s[None], t[None], torch.ones(1, 3))[0], s)
    kl_T = token_reverse_kl(s[None], t[None], torch.ones(1, 3))[0]

    def grads(baseline: bool) -> torch.Tensor:
        out = []
        for g in range(40):
            tokens = _sample(s, 2000, seed=300 + g)
            n = len(tokens)
            logp = token_logprobs(s.expand(n, -1, -1), tokens)
            teacher = token_logprobs(t.expand(n, -1, -1), tokens)
            mask = torch.ones(n, 3)
            base = -kl_T.expand(n, -1) if baseline else None
            a = advantages(teacher, logp.detach(), mask, baseline_BT=base)
            loss, _ = sampled_reverse_kl_loss(logp, logp.detach(), a, mask)
            out.append(torch.autograd.grad(loss, s)[0])
        return torch.stack(out)

    plain, based = grads(False), grads(True)
    mean, se = based.mean(0), based.std(0) / math.sqrt(len(based))
    assert torch.all((mean - exact).abs() < 5 * se), (mean, exact, se)
    ratio = (based.var(0).sum() / plain.var(0).sum()).item()
    assert ratio < 0.7, ratio  # 0.53 with these seeds


def test_asymmetric_clip_cuts_above_at_its_own_bound():
    old = torch.full((1, 2), -2.0, dtype=D)
    a = torch.ones(1, 2, dtype=D)
    for log_ratio, cut in ((math.log(1.25), False), (math.log(1.35), True)):
        logp = (old + log_ratio).requires_grad_()
        loss, stats = sampled_reverse_kl_loss(logp, old, a, torch.ones(1, 2), 0.2, 0.3)
        (grad,) = torch.autograd.grad(loss, logp)
        assert torch.all(grad == 0) == cut and stats["clip_frac"] == float(cut)
    logp = (old + math.log(0.75)).requires_grad_()  # below 1 - 0.2: a negative advantage is cut
    loss, _ = sampled_reverse_kl_loss(logp, old, -a, torch.ones(1, 2), 0.2, 0.3)
    assert torch.all(torch.autograd.grad(loss, logp)[0] == 0)


def test_dual_clip_bounds_the_loss_of_negative_advantages():
    old = torch.full((1, 3), -2.0, dtype=D)
    logp = (old + torch.tensor([[0.0, math.log(2.0), math.log(5.0)]], dtype=D)).requires_grad_()
    a = torch.full((1, 3), -1.0, dtype=D)
    m = torch.ones(1, 3)
    plain, _ = sampled_reverse_kl_loss(logp, old, a, m, 0.2, 0.3)
    dual, stats = sampled_reverse_kl_loss(logp, old, a, m, 0.2, 0.3, dual_clip=3.0)
    # per token: ratio 1 -> 1, ratio 2 -> 2, ratio 5 -> 5 without, min(5, 3) = 3 with
    assert plain.item() == pytest.approx((1 + 2 + 5) / 3) and dual.item() == pytest.approx(2)
    (grad,) = torch.autograd.grad(dual, logp)
    assert grad[0, 2] == 0 and grad[0, 1] != 0 and stats["clip_frac"] == pytest.approx(1 / 3)
    pos, _ = sampled_reverse_kl_loss(logp, old, -a, m, 0.2, 0.3, dual_clip=3.0)
    assert pos.item() == pytest.approx(-(1 + 1.3 + 1.3) / 3)  # positive advantages: not touched
    with pytest.raises(ValueError, match="dual_clip"):
        sampled_reverse_kl_loss(logp, old, a, m, 0.2, 0.3, dual_clip=0.5)


def test_forward_kl_topk_is_the_cross_entropy_to_the_renormalised_top_k():
    s = _restricted(_logits(2, 4, 9, seed=36), [8]).requires_grad_()
    t = _restricted(_logits(2, 4, 9, seed=37), [8])
    m = _mask(2, 4)
    loss, stats = forward_kl_topk_loss(s, t, m, k=3)
    terms, masses = [], []
    for b in range(2):
        for pos in range(4):
            if not m[b, pos]:
                continue
            top = t[b, pos].topk(3)
            q = torch.softmax(top.values, -1)
            logp = torch.log_softmax(s[b, pos].detach(), -1)[top.indices]
            terms.append(-(q * logp).sum().item())
            masses.append(torch.softmax(t[b, pos], -1)[top.indices].sum().item())
    assert loss.item() == pytest.approx(sum(terms) / len(terms), abs=1e-12)
    assert stats["teacher_topk_mass"] == pytest.approx(sum(masses) / len(masses))
    (grad,) = torch.autograd.grad(loss, s)
    assert torch.isfinite(grad).all() and torch.all(grad[..., 8] == 0)
    # the whole support as top k: the loss is the full cross-entropy, at the student = teacher
    # minimum only when the two agree
    same, _ = forward_kl_topk_loss(t.clone(), t, m, k=8)
    worse, _ = forward_kl_topk_loss(s.detach(), t, m, k=8)
    assert same.item() < worse.item()


def test_dead_mass_and_restrict():
    from mgsd.model import support

    logits_BV = torch.log(torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]], dtype=D))
    allowed_V = torch.tensor([True, True, False])
    assert support.dead_mass(logits_BV, allowed_V).tolist() == pytest.approx([0.3, 0.8])
    restricted = support.restrict(logits_BV, allowed_V)
    assert torch.softmax(restricted, -1)[:, 2].tolist() == [0.0, 0.0]
    assert torch.softmax(restricted, -1)[0, 0].item() == pytest.approx(0.5 / 0.7)
    assert support.dead_mass(logits_BV, torch.ones(3, dtype=torch.bool)).tolist() == [0.0, 0.0]


# ---------------------------------------------------------------- GRPO


def test_group_advantages_have_mean_zero_unit_std_and_zero_for_equal_groups():
    r = torch.tensor([1.0, 0.0, 0.0, 3.0, 2.0, 2.0, 2.0, 2.0, -1.0, 0.5, 0.5, 4.0], dtype=D)
    a = group_advantages(r, 4, eps=1e-12).view(3, 4)
    live = a[[0, 2]]
    assert torch.allclose(live.mean(1), torch.zeros(2, dtype=D), atol=1e-12)
    assert torch.allclose(live.std(1, unbiased=False), torch.ones(2, dtype=D), atol=1e-9)
    assert torch.equal(a[1], torch.zeros(4, dtype=D))  # equal rewards: nothing to learn
    # by hand: group 0 is 1, 0, 0, 3 (mean 1, population std sqrt(1.5))
    assert a[0].tolist() == pytest.approx([0.0, -1 / 1.5**0.5, -1 / 1.5**0.5, 2 / 1.5**0.5])
    # the same rewards in another grouping are other advantages: the group is the prompt's
    assert not torch.allclose(group_advantages(r, 6), group_advantages(r, 4))
    with pytest.raises(ValueError, match="groups of 5"):
        group_advantages(r, 5)


def test_k3_is_the_unbiased_nonnegative_kl_estimate():
    p_V = torch.softmax(_logits(7, seed=3), -1)
    q_V = torch.softmax(_logits(7, seed=4), -1)
    logp_V, logq_V = p_V.log(), q_V.log()
    # E_{y ~ p}[k3(y)] = KL(p || q), every term >= 0, 0 where the two agree
    k3_V = k3_kl(logp_V[None], logq_V[None], torch.ones(1, 7, dtype=torch.bool))[0]
    assert (k3_V >= 0).all()
    assert (p_V * k3_V).sum().item() == pytest.approx((p_V * (logp_V - logq_V)).sum().item())
    same = k3_kl(logp_V[None], logp_V[None], torch.ones(1, 7, dtype=torch.bool))
    assert torch.equal(same, torch.zeros_like(same))
    # masked positions are 0 whatever they hold
    off = k3_kl(torch.full((1, 2), float("nan"), dtype=D), torch.zeros(1, 2, dtype=D),
                torch.tensor([[False, False]]))  # fmt: skip
    assert torch.equal(off, torch.zeros(1, 2, dtype=D))


def test_grpo_loss_at_ratio_one_is_the_token_mean_of_minus_the_advantage():
    logp_BT = (-torch.rand(3, 5, generator=_gen(1), dtype=D)).requires_grad_()
    mask_BT = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    adv_B = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    loss, st = grpo_loss(logp_BT, logp_BT.detach(), adv_B, mask_BT)
    # 3 tokens of +1, 5 of -0.5, 1 of +2: a reply's weight is its length (token mean)
    assert loss.item() == pytest.approx(-(3 * 1.0 + 5 * -0.5 + 2.0) / 9)
    assert st["tokens"] == 9 and st["clip_frac"] == 0 and "kl" not in st
    loss.backward()
    want = torch.where(mask_BT, -adv_B[:, None] / 9, 0).expand(3, 5)
    assert torch.allclose(logp_BT.grad, want)


def test_grpo_clip_and_kl_term():
    old_BT = torch.zeros(1, 2, dtype=D)
    logp_BT = torch.tensor([[0.5, -0.5]], dtype=D, requires_grad=True)  # ratios e^0.5, e^-0.5
    mask_BT = torch.ones(1, 2, dtype=torch.bool)
    loss, st = grpo_loss(logp_BT, old_BT, torch.tensor([1.0], dtype=D), mask_BT, 0.2, 0.2)
    # A > 0: token 0 is past 1 + 0.2 (clipped, no gradient), token 1 below 1 - 0.2 (not clipped)
    assert st["clip_frac"] == 0.5
    assert loss.item() == pytest.approx(-(1.2 + math.exp(-0.5)) / 2)
    loss.backward()
    assert logp_BT.grad[0, 0] == 0 and logp_BT.grad[0, 1] != 0
    ref_BT = torch.tensor([[0.1, -0.2]], dtype=D)
    with_kl, st_kl = grpo_loss(
        logp_BT, old_BT, torch.tensor([1.0], dtype=D), mask_BT, 0.2, 0.2,
        ref_logprobs_BT=ref_BT, kl_weight=0.3,
    )  # fmt: skip
    kl = k3_kl(logp_BT, ref_BT, mask_BT).mean().item()
    assert st_kl["kl"] == pytest.approx(kl) and kl > 0
    assert with_kl.item() == pytest.approx(loss.item() + 0.3 * kl)
    with pytest.raises(ValueError, match="needs ref_logprobs_BT"):
        grpo_loss(logp_BT, old_BT, torch.tensor([1.0], dtype=D), mask_BT, kl_weight=0.1)
