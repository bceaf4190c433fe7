"""`mgsd distill` on the tiny backbone: reply alignment, learning, resume, loss and prompt options.

The teacher of these tests is the tiny backbone after a few dozen supervised steps that teach it
one fixed reply `TEACHER_REPLY` under the symbolic and teacher prompts, and another one,
`STUDENT_REPLY`, under the picture prompt: a modality gap the distillation has to close. Torch
runs on one thread here: the models are tiny, and on a shared 2-core machine two threads are
several times slower than one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from stage_runs import straight_and_killed  # same folder

from mgsd import puzzles
from mgsd.config import DistillConfig
from mgsd.data import records
from mgsd.data.splits import generate_rows
from mgsd.model import support
from mgsd.model.batching import (
    Example,
    collate_score,
    collate_train,
    end_id,
    score_replies,
    text_ids,
)
from mgsd.model.generate import Generation
from mgsd.model.load import load_model, read_stage_info, save_model
from mgsd.model.tasks import Instance, load_instances, make_example
from mgsd.train import common, distill, losses, onpolicy

LOGPROB_TOL = 1e-4  # fp32 on CPU: one right-padded batch vs one unpadded forward per example
TEACHER_REPLY = "size 3\nstart 0 0\ngoal 2 2\n<answer>R R D D</answer>"
STUDENT_REPLY = "size 3\nstart 0 0\ngoal 2 2\n<answer>D D R R</answer>"
# the supervised steps that make the teacher: the loss ends near 0.04 per token
SFT_STEPS, SFT_BATCH, SFT_LR = 60, 12, 3e-3
pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_image_size) -> dict[str, Path]:
    """Train (10 instances: 3 puzzles, sides 3 to 5) and val (2) Parquet files."""
    root = tmp_path_factory.mktemp("distill_data")
    rows = []
    for puzzle, levels, n in (
        ("frozenlake", [3, 4], 3),
        ("maze", [3], 2),
        ("minibehaviour", [5], 2),
    ):
        rows += generate_rows(puzzle, "train", levels, n, 1, tiny_image_size, set(), {}, False)
    records.write_data(rows, root / "train.parquet")
    records.write_data(rows[:2], root / "val.parquet")
    return {"train": root / "train.parquet", "val": root / "val.parquet"}


@pytest.fixture(scope="module")
def insts(data) -> list[Instance]:
    return load_instances([data["train"]])


def with_reply(task: str, inst: Instance, reply: str) -> Example:
    return dataclasses.replace(make_example(task, inst, "compact", with_reply=False), reply=reply)


@pytest.fixture(scope="module")
def teacher_dir(tiny_model_dir, insts, tmp_path_factory) -> Path:
    """The tiny backbone taught TEACHER_REPLY (text prompts) and STUDENT_REPLY (picture)."""
    model, processor = load_model(tiny_model_dir, device="cpu")
    examples = [
        with_reply(task, x, TEACHER_REPLY if task != "student" else STUDENT_REPLY)
        for x in insts
        for task in ("teacher", "symbolic", "student")
    ]
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=SFT_LR)
    for _ in range(SFT_STEPS):
        pick = torch.randperm(len(examples), generator=g)[:SFT_BATCH].tolist()
        model(**collate_train(processor, [examples[i] for i in pick])).loss.backward()
        opt.step()
        opt.zero_grad()
    return save_model(model, processor, tmp_path_factory.mktemp("teacher") / "model", {})


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    return load_model(teacher_dir, device="cpu", trainable=False)


# ---------------------------------------------------------------- alignment


def plain_forward(model, processor, example: Example, reply: list[int]):
    """One unpadded forward over [chat-template prompt + reply ids], built without `batching`.

    Returns the logits (L, V) and the prompt length P: the logits at P - 1 + t predict reply
    token t.
    """
    tok = processor.tokenizer
    text = processor.apply_chat_template(
        example.messages, add_generation_prompt=True, tokenize=False
    )
    vision = {}
    if example.image is not None:
        vision = dict(processor.image_processor(images=[example.image], return_tensors="pt"))
        n_tokens = int(vision["image_grid_thw"].prod()) // processor.image_processor.merge_size**2
        text = text.replace("<|image_pad|>", "<|image_pad|>" * n_tokens)
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    ids_1L = torch.tensor([prompt + reply])
    if vision:
        image_id = tok.convert_tokens_to_ids("<|image_pad|>")
        vision["mm_token_type_ids"] = (ids_1L == image_id).long()
    with torch.no_grad():
        logits_LV = model(input_ids=ids_1L, attention_mask=torch.ones_like(ids_1L), **vision).logits
    return logits_LV[0], len(prompt)


STRUCTURAL = (
    "<|im_start|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def on_support(processor, logits_LV: torch.Tensor) -> torch.Tensor:
    """The logits with -inf on the ids a reply can never hold, written out here, apart from
    `mgsd.model.support`: structural tokens and rows past the tokenizer."""
    tok = processor.tokenizer
    dead = [tok.convert_tokens_to_ids(t) for t in STRUCTURAL] + list(
        range(len(tok), logits_LV.shape[-1])
    )
    out = logits_LV.clone()
    out[..., dead] = float("-inf")
    return out


def reference_logprobs(model, processor, examples, replies) -> list[torch.Tensor]:
    out = []
    for ex, reply in zip(examples, replies, strict=True):
        logits_LV, p = plain_forward(model, processor, ex, reply)
        logits_RV = on_support(processor, logits_LV[p - 1 : p - 1 + len(reply)])
        logprobs_RV = torch.log_softmax(logits_RV, dim=-1)
        out.append(logprobs_RV.gather(1, torch.tensor(reply)[:, None]).squeeze(1))
    return out


def replies_of(processor, insts) -> list[list[int]]:
    """Reply ids of different lengths: whole replies, cut ones, one closed by <|im_end|>."""
    out = []
    for i, x in enumerate(insts):
        ids = text_ids(processor, make_example("student", x, "compact").reply)
        out.append([ids, ids[: 3 + 2 * i], ids + [end_id(processor)]][i % 3])
    return out


def allowed(model, processor) -> torch.Tensor:
    return support.support_mask(processor.tokenizer, support.output_rows(model))


def loop_logprobs(model, processor, examples, replies) -> tuple[torch.Tensor, torch.Tensor]:
    """What `distill_step` computes: `onpolicy.score`, then the log-probs of the reply ids."""
    with torch.no_grad():
        scored = onpolicy.score(model, processor, examples, replies, allowed(model, processor))
    return scored.logprobs(), scored.valid


@pytest.mark.parametrize("task", ["teacher", "symbolic", "student"])
def test_loop_logprobs_equal_one_plain_forward_per_example(teacher, insts, task):
    """Mixed puzzles and sides (prompts of different lengths), replies of different lengths."""
    model, processor = teacher
    picked = insts[::2] + insts[1:2]  # frozenlake 3 and 4, maze 3, minibehaviour 5
    examples = [make_example(task, x, "compact", with_reply=False) for x in picked]
    if task != "student":  # teacher prompts with and without the plan in one batch
        other = "symbolic" if task == "teacher" else "teacher"
        examples[1] = make_example(other, picked[1], "compact", with_reply=False)
    else:  # picture prompts of two lengths (compact prompts of all puzzles may tie)
        examples[1] = make_example(task, picked[1], "instruct", with_reply=False)
    replies = replies_of(processor, picked)
    logprobs_BT, mask_BT = loop_logprobs(model, processor, examples, replies)
    expected = reference_logprobs(model, processor, examples, replies)
    prompt_lengths = {plain_forward(model, processor, e, [1])[1] for e in examples}
    assert len(prompt_lengths) >= (2 if task == "student" else 3)
    for b, (reply, ref_R) in enumerate(zip(replies, expected, strict=True)):
        assert mask_BT[b].tolist() == [t < len(reply) for t in range(mask_BT.shape[1])]
        got_R = logprobs_BT[b, : len(reply)]
        assert torch.allclose(got_R, ref_R, atol=LOGPROB_TOL), (b, (got_R - ref_R).abs().max())


def test_first_reply_token_is_scored_by_the_last_prompt_position(teacher, insts):
    """No off-by-one: row b, reply position 0 holds the logits at the last prompt position."""
    model, processor = teacher
    for task in ("teacher", "student"):
        examples = [make_example(task, x, "compact", with_reply=False) for x in insts[:3]]
        replies = replies_of(processor, insts[:3])
        with torch.no_grad():
            scored = onpolicy.score(model, processor, examples, replies, allowed(model, processor))
        logits_BTV = scored.logits
        for b, (ex, reply) in enumerate(zip(examples, replies, strict=True)):
            logits_LV, p = plain_forward(model, processor, ex, reply)
            logits_LV = on_support(processor, logits_LV)
            assert torch.allclose(logits_BTV[b, 0], logits_LV[p - 1], atol=LOGPROB_TOL)
            last = len(reply) - 1
            assert torch.allclose(logits_BTV[b, last], logits_LV[p - 1 + last], atol=LOGPROB_TOL)
            # the neighbours differ by far more than the tolerance: the check can fail
            live = torch.isfinite(logits_LV[p])
            assert (logits_BTV[b, 0] - logits_LV[p])[live].abs().max() > 100 * LOGPROB_TOL
            assert (logits_BTV[b, 0] - logits_LV[p - 2])[live].abs().max() > 100 * LOGPROB_TOL


def step_inputs(processor, insts, replies):
    """`distill_step`'s inputs for given reply ids (as if sampled from the picture prompt)."""
    examples = [make_example("student", x, "compact", with_reply=False) for x in insts]
    tok = processor.tokenizer
    gens = [
        Generation(r, tok.decode(r, skip_special_tokens=True), [0.0] * len(r), True)
        for r in replies
    ]
    return examples, gens


def run_step(student, teacher, processor, insts, replies, *, plan: bool, loss: str, **options):
    examples, gens = step_inputs(processor, insts, replies)
    argv = ["--method", "m", "--init", "i", "--teacher", "t", "--train", "a", "--val", "b",
            "--config", "{}", "--out", "o", "--metrics", "m", "--log", "l", "--work", "w",
            "--loss", loss] + (["--teacher-sees-plan"] if plan else [])  # fmt: skip
    args = distill.parse_args(argv)  # the CLI's flags, as `main` reads them
    cfg = DistillConfig(steps=1, batch_size=len(insts), max_new_tokens=8, lr=1e-3, **options)
    acc = common.setup(0)
    return distill.distill_step(
        student, teacher, processor, insts, examples, gens, cfg, acc, allowed(student, processor),
        loss_kind=args.loss, teacher_sees_plan=args.teacher_sees_plan, style=args.style,
    )  # fmt: skip


@pytest.mark.parametrize("loss", distill.LOSSES)
def test_distill_step_stats_equal_the_plain_forward_reference(tiny, teacher, insts, loss):
    """The loop's logged teacher / student log-probs and reverse KL, recomputed independently."""
    student, processor = tiny
    picked = insts[:5]
    replies = replies_of(processor, picked)
    loss_value, st = run_step(student, teacher[0], processor, picked, replies, plan=True, loss=loss)
    t_examples = [make_example("teacher", x, "compact", with_reply=False) for x in picked]
    s_examples = [make_example("student", x, "compact", with_reply=False) for x in picked]
    teacher_N = torch.cat(reference_logprobs(teacher[0], processor, t_examples, replies))
    student_N = torch.cat(reference_logprobs(student, processor, s_examples, replies))
    assert st["tokens"] == teacher_N.numel()
    assert st["teacher_logprob"] == pytest.approx(teacher_N.mean().item(), abs=LOGPROB_TOL)
    assert st["student_logprob"] == pytest.approx(student_N.mean().item(), abs=LOGPROB_TOL)
    if loss == "sampled_reverse_kl":
        expected_kl = (student_N - teacher_N).mean().item()
    else:  # sum_v p_s(v) (log p_s(v) - log p_t(v)) at every reply position
        kls = []
        for ts, ss, r in zip(t_examples, s_examples, replies, strict=True):
            (t_LV, tp), (s_LV, sp) = (
                plain_forward(m, processor, e, r) for m, e in ((teacher[0], ts), (student, ss))
            )
            logq_RV = torch.log_softmax(on_support(processor, t_LV[tp - 1 : tp - 1 + len(r)]), -1)
            logp_RV = torch.log_softmax(on_support(processor, s_LV[sp - 1 : sp - 1 + len(r)]), -1)
            live_RV = torch.isfinite(logp_RV)
            kls.append(torch.where(live_RV, logp_RV.exp() * (logp_RV - logq_RV), 0).sum(-1))
        expected_kl = torch.cat(kls).mean().item()
        assert loss_value.item() == pytest.approx(expected_kl, abs=LOGPROB_TOL)
    assert st["reverse_kl"] == pytest.approx(expected_kl, abs=LOGPROB_TOL)
    assert abs(expected_kl) > 100 * LOGPROB_TOL  # not a vacuous comparison


def test_stabilisers_change_the_step_as_their_maths_says(tiny, teacher, insts):
    """Each option through the loop's step: the per-token baseline adds the exact KL to every
    advantage (at ratio 1 the loss moves by exactly its mean, the gradient's expectation
    stays), the forward-KL term adds its weighted cross-entropy, the clips leave ratio 1 alone."""
    student, processor = tiny
    picked = insts[:5]
    replies = replies_of(processor, picked)
    step = functools.partial(
        run_step, student, teacher[0], processor, picked, replies, plan=True,
        loss="sampled_reverse_kl",
    )  # fmt: skip
    plain, st = step()
    based, st_b = step(kl_baseline=True)
    s_ex = [make_example("student", x, "compact", with_reply=False) for x in picked]
    t_ex = [make_example("teacher", x, "compact", with_reply=False) for x in picked]
    with torch.no_grad():
        s = onpolicy.score(student, processor, s_ex, replies, allowed(student, processor))
        t = onpolicy.score(teacher[0], processor, t_ex, replies, allowed(student, processor))
    kl_BT = losses.token_reverse_kl(s.logits, t.logits, s.valid)
    assert losses.masked_mean(kl_BT, s.valid).item() > 0.01  # the baseline is not vacuous
    # loss = -mean(A); with the baseline, A + KL_t: the loss falls by the mean exact KL
    assert based.item() == pytest.approx(plain.item() - losses.masked_mean(kl_BT, s.valid).item())
    assert st_b["reverse_kl"] == pytest.approx(st["reverse_kl"])  # the logged KL is the same
    fkl, st_f = step(forward_kl_weight=0.5, forward_kl_top_k=4)
    expected, _ = losses.forward_kl_topk_loss(s.logits, t.logits, s.valid, 4)
    assert fkl.item() == pytest.approx(plain.item() + 0.5 * expected.item(), rel=1e-5)
    assert st_f["forward_ce"] == pytest.approx(expected.item(), rel=1e-5) and "forward_ce" not in st
    clipped, st_c = step(clip_low=0.2, clip_high=0.3, dual_clip=3.0)
    assert clipped.item() == pytest.approx(plain.item()) and st_c["clip_frac"] == 0


def test_teacher_sees_the_plan_only_with_the_option(tiny, insts):
    """`--teacher-sees-plan` puts the reference plan in the teacher's prompt, and only then."""
    model, processor = tiny
    picked = insts[:4]
    replies = replies_of(processor, picked)
    seen: list[list[str]] = []

    def record(module, args, kwargs):  # the prompt part of every row
        rows = processor.tokenizer.batch_decode(kwargs["input_ids"])
        seen.append([row.split("<|im_start|>assistant")[0] for row in rows])

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:  # the same model as student and teacher: calls alternate teacher, student
        for plan in (True, False):
            run_step(model, model, processor, picked, replies, plan=plan, loss="sampled_reverse_kl")
    finally:
        hook.remove()
    (with_plan, student_a), (without_plan, student_b) = seen[0:2], seen[2:4]
    for x, a, b, s in zip(picked, with_plan, without_plan, student_a, strict=True):
        plan_line = f"reference plan:\n<answer>{x.solution}</answer>"
        assert plan_line in a and "reference plan" not in b and "reference plan" not in s
        state_text = puzzles.get(x.puzzle).describe(x.state)
        assert state_text in a and state_text in b and state_text not in s
        assert "<|image_pad|>" in s and "<|image_pad|>" not in a + b
    assert student_a == student_b


# ---------------------------------------------------------------- the loop, end to end


def distill_argv(root: Path, init: Path, teacher: Path, data: dict, cfg: dict, *extra: str):
    return [
        "--method", "test", "--init", str(init), "--teacher", str(teacher),
        "--train", str(data["train"]), "--val", str(data["val"]), "--config", json.dumps(cfg),
        "--out", str(root / "model"), "--metrics", str(root / "metrics.json"),
        "--log", str(root / "train_log.jsonl"), "--work", str(root / "work"), *extra,
    ]  # fmt: skip


def read_log(root: Path) -> list[dict]:
    rows = [json.loads(line) for line in (root / "train_log.jsonl").read_text().splitlines()]
    return [r for r in rows if "distill/reverse_kl" in r]


def reply_logprob(model_dir: Path, insts, reply: str) -> float:
    """Mean over instances of log p(reply | picture prompt), from one scoring forward."""
    model, processor = load_model(model_dir, device="cpu", trainable=False)
    examples = [make_example("student", x, "compact", with_reply=False) for x in insts]
    batch = collate_score(processor, examples, [text_ids(processor, reply)] * len(examples))
    with torch.no_grad():
        logprobs_BR, _ = score_replies(model, batch, allowed(model, processor))
    return logprobs_BR.sum(1).mean().item()


# settings of the learning test. Tried once with distillation seeds 0-4 (teacher SFT seed 0) and
# 0-1 (SFT seeds 1, 2): mean reverse KL of steps 1-5 0.24-0.47, of steps 26-30 0.04-0.12 (ratio
# 0.11-0.41); log p(TEACHER_REPLY | picture) -14.5 -> -1.1..-1.6, log p(STUDENT_REPLY | picture)
# -1.1 -> -13.8..-17.7.
LEARN = {
    "steps": 30, "batch_size": 8, "max_new_tokens": 32, "temperature": 1.0, "lr": 1e-3,
    "weight_decay": 0.0, "checkpoint_every": 0, "val_instances": 2,
}  # fmt: skip


@pytest.mark.slow
def test_distillation_moves_the_student_to_the_teachers_reply(teacher_dir, data, insts, tmp_path):
    """30 steps: the reverse KL falls and the picture prompt takes up the teacher's reply."""
    before = reply_logprob(teacher_dir, insts, TEACHER_REPLY)
    before_own = reply_logprob(teacher_dir, insts, STUDENT_REPLY)
    assert before < -10 and before_own > -3  # the gap to close
    argv = distill_argv(tmp_path, teacher_dir, teacher_dir, data, {**LEARN, "seed": 0})
    assert distill.main([*argv, "--teacher-sees-plan"]) == 0
    kl = [r["distill/reverse_kl"] for r in read_log(tmp_path)]
    assert len(kl) == LEARN["steps"]
    first, last = sum(kl[:5]) / 5, sum(kl[-5:]) / 5
    assert last < 0.6 * first, kl
    after = reply_logprob(tmp_path / "model", insts, TEACHER_REPLY)
    after_own = reply_logprob(tmp_path / "model", insts, STUDENT_REPLY)
    assert after > before + 8 and after > -4, (before, after)
    assert after_own < before_own - 8, (before_own, after_own)


def test_full_reverse_kl_runs_and_logs_a_kl_that_is_not_negative(teacher_dir, data, tmp_path):
    cfg = {"steps": 3, "batch_size": 4, "max_new_tokens": 32, "lr": 1e-3, "checkpoint_every": 0,
           "val_instances": 1}  # fmt: skip
    argv = distill_argv(tmp_path, teacher_dir, teacher_dir, data, cfg, "--loss", "full_reverse_kl")
    assert distill.main(argv) == 0
    rows = read_log(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert math.isfinite(r["distill/reverse_kl"]) and r["distill/reverse_kl"] >= 0, r
        assert r["distill/loss"] == pytest.approx(r["distill/reverse_kl"], rel=1e-6)
        assert "distill/clip_frac" not in r  # the clipped estimator's stats are not faked
    # the picture prompt's reply (STUDENT_REPLY) is far from the teacher's
    assert rows[0]["distill/reverse_kl"] > 0.01
    assert read_stage_info(tmp_path / "model")["loss"] == "full_reverse_kl"
    before, after = load_weights(teacher_dir), load_weights(tmp_path / "model")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    (file,) = Path(model_dir).glob("*.safetensors")
    return load_file(file)


# settings of the resume test: a checkpoint every 2 of 8 steps
RESUME = {
    "steps": 8, "batch_size": 4, "max_new_tokens": 24, "temperature": 1.0, "lr": 1e-3,
    "checkpoint_every": 2, "val_instances": 1, "seed": 3,
}  # fmt: skip


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_weights_of_a_straight_run(teacher_dir, data, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    argv = {r: distill_argv(r, teacher_dir, teacher_dir, data, RESUME) for r in (straight, killed)}
    straight_and_killed("distill", "test", straight, killed, argv)
    a, b = load_weights(straight / "model"), load_weights(killed / "model")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst == 0.0, worst  # same samples, same updates: bit for bit on one CPU thread
    keys = ("distill/reverse_kl", "distill/reply_tokens", "distill/loss", "train/grad_norm")
    log_a, log_b = read_log(straight), read_log(killed)
    assert [r["step"] for r in log_b] == list(range(1, RESUME["steps"] + 1))
    assert [[r[k] for k in keys] for r in log_a] == [[r[k] for k in keys] for r in log_b]
    moved = load_weights(teacher_dir)
    assert any(not torch.equal(moved[k], a[k]) for k in a)  # the runs did train


def test_sampling_skips_ids_past_the_tokenizer(tiny_model_dir, insts):
    """Qwen3-VL has 151936 embedding rows for 151669 tokens: a sampled id past the tokenizer
    used to crash the loop's sampling (IndexError in the answer stop)."""
    model, processor = load_model(tiny_model_dir, device="cpu")
    n = len(processor.tokenizer)
    model.resize_token_embeddings(n + 64, mean_resizing=False)
    with torch.no_grad():  # tied embeddings: these rows now dominate the output
        model.get_output_embeddings().weight[n:] *= 50
    cfg = DistillConfig(steps=1, batch_size=4, max_new_tokens=12, lr=1e-3, temperature=1.0)
    flat, examples, gens = onpolicy.sample(model, processor, insts[:4], cfg, "compact", 0, "cpu")
    with torch.no_grad():
        scored = onpolicy.score(model, processor, examples, [[1]] * 4, allowed(model, processor))
    # most of the mass is past the tokenizer, so an unrestricted sampler would pick those ids
    assert scored.dead_mass[:, 0].min() > 0.5
    assert all(g.token_ids and all(0 <= t < n for t in g.token_ids) for g in gens)


def test_sampler_log_probs_are_the_trainers(tiny, teacher, insts):
    """The replies `sample` draws carry the log-probs the training forward gives them: the
    logged `sampler_gap` is float noise, and it does see a sampler that is off."""
    student, processor = tiny
    cfg = DistillConfig(steps=1, batch_size=6, max_new_tokens=24, lr=1e-3)
    flat, examples, gens = onpolicy.sample(student, processor, insts[:6], cfg, "compact", 0, "cpu")
    assert sum(len(g.token_ids) for g in gens) > 20
    argv = ["--method", "m", "--init", "i", "--teacher", "t", "--train", "a", "--val", "b",
            "--config", "{}", "--out", "o", "--metrics", "m", "--log", "l", "--work", "w"]  # fmt: skip
    args, acc = distill.parse_args(argv), common.setup(0)
    ids = allowed(student, processor)
    _, st = distill.distill_step(
        student, teacher[0], processor, flat, examples, gens, cfg, acc, ids,
        loss_kind=args.loss, teacher_sees_plan=args.teacher_sees_plan, style=args.style,
    )  # fmt: skip
    assert st["sampler_gap"] < 1e-4
    off = [Generation(g.token_ids, g.text, [x - 0.5 for x in g.logprobs], g.finished) for g in gens]
    _, st = distill.distill_step(
        student, teacher[0], processor, flat, examples, off, cfg, acc, ids,
        loss_kind=args.loss, teacher_sees_plan=args.teacher_sees_plan, style=args.style,
    )  # fmt: skip
    assert st["sampler_gap"] == pytest.approx(0.5, abs=1e-3)


# ---------------------------------------------------------------- one support for sampling and training

PADDING_ROWS = 512  # embedding rows past the tokenizer (Qwen3-VL has 267 of them)
DRIFT = {
    "steps": 30, "batch_size": 8, "max_new_tokens": 32, "temperature": 1.0, "lr": 1e-2,
    "weight_decay": 0.0, "checkpoint_every": 0, "val_instances": 2,
}  # fmt: skip


@pytest.fixture(scope="module")
def padded_teacher_dir(tiny_scratch_config, tiny_image_size, insts, tmp_path_factory) -> Path:
    """A tiny backbone with padding rows, confidently wrong on pictures (one fixed reply) and
    peaked on the teacher's prompts (each instance's own true reply, which the student cannot
    read off its picture): the reverse KL stays high, so the advantages stay negative on average.
    """
    from mgsd.model.scratch import build_scratch

    cfg = dataclasses.replace(tiny_scratch_config, embedding_rows=0)
    probe = build_scratch(cfg, tiny_image_size, tmp_path_factory.mktemp("probe") / "model")
    _, processor = load_model(probe, device="cpu", trainable=False)
    cfg = dataclasses.replace(cfg, embedding_rows=len(processor.tokenizer) + PADDING_ROWS)
    model_dir = build_scratch(cfg, tiny_image_size, tmp_path_factory.mktemp("padded") / "model")
    model, processor = load_model(model_dir, device="cpu")
    examples = []
    for x in insts:
        truth = make_example("student", x, "compact").reply
        examples += [with_reply(t, x, truth) for t in ("teacher", "symbolic")]
        examples.append(with_reply("student", x, STUDENT_REPLY))
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=SFT_LR)
    for _ in range(150):
        pick = torch.randperm(len(examples), generator=g)[:SFT_BATCH].tolist()
        model(**collate_train(processor, [examples[i] for i in pick])).loss.backward()
        opt.step()
        opt.zero_grad()
    return save_model(model, processor, tmp_path_factory.mktemp("padded_teacher") / "model", {})


def _identity_support(monkeypatch):
    """The trainer without its support (the sampler keeps it): the mutation the test guards."""
    import types

    from mgsd.model import batching

    unmasked = types.SimpleNamespace(
        restrict=lambda logits, allowed: logits, dead_mass=support.dead_mass
    )
    monkeypatch.setattr(batching, "support", unmasked)


@pytest.mark.slow
def test_training_on_the_samplers_support_stops_the_drift_to_unsampled_ids(
    padded_teacher_dir, data, tmp_path, monkeypatch
):
    """Reproduces the collapse of the first one-GPU runs and shows the support stops it.

    With the trainer's softmax over all rows, every negative advantage raises the logits of the
    ids the sampler can never draw, and nothing lowers them: within 30 steps most of the raw
    student's mass sits there and the log-prob of its own samples falls below -log(tokens),
    which a distribution over the drawable ids alone cannot do. On the support, the same run
    keeps that mass near its initial value and the samples' log-probs high.
    """
    _, processor = load_model(padded_teacher_dir, device="cpu", trainable=False)
    floor = -math.log(len(processor.tokenizer))
    runs = {}
    for arm in ("masked", "unmasked"):
        if arm == "unmasked":
            _identity_support(monkeypatch)
        root = tmp_path / arm
        argv = distill_argv(root, padded_teacher_dir, padded_teacher_dir, data, DRIFT)
        assert distill.main([*argv, "--teacher-sees-plan"]) == 0
        runs[arm] = read_log(root)
    dead = {arm: [r["distill/dead_mass"] for r in rows] for arm, rows in runs.items()}
    own = {arm: [r["distill/student_logprob"] for r in rows] for arm, rows in runs.items()}
    assert max(dead["unmasked"]) > 0.5 and min(own["unmasked"]) < floor, (dead, own)
    assert max(dead["masked"]) < 0.05 and min(own["masked"]) > floor, (dead, own)
    assert sum(r["distill/reverse_kl"] for r in runs["masked"][:5]) / 5 > 0.5  # a real gap
