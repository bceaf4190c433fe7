"""`mgsd rl` (GRPO from the task reward) on the tiny backbone: the reward of fixed replies through
the loop's own step, learning, and resume after SIGKILL. One torch thread, as in test_distill.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from stage_runs import straight_and_killed  # same folder

from mgsd import puzzles
from mgsd.config import RLConfig
from mgsd.data import records
from mgsd.data.splits import generate_rows
from mgsd.model import support
from mgsd.model.batching import text_ids
from mgsd.model.generate import Generation
from mgsd.model.load import load_model, read_stage_info
from mgsd.model.tasks import load_instances, make_example
from mgsd.train import common, onpolicy, rl

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_image_size) -> dict[str, Path]:
    """Train (8 instances of the three puzzles) and val (2) Parquet files."""
    root = tmp_path_factory.mktemp("rl_data")
    rows = []
    for puzzle, levels, n in (
        ("frozenlake", [3], 3),
        ("maze", [3, 4], 2),
        ("minibehaviour", [5], 1),
    ):
        rows += generate_rows(puzzle, "train", levels, n, 1, tiny_image_size, set(), {}, False)
    records.write_data(rows, root / "train.parquet")
    records.write_data(rows[:2], root / "val.parquet")
    return {"train": root / "train.parquet", "val": root / "val.parquet"}


@pytest.fixture(scope="module")
def insts(data):
    return load_instances([data["train"]])


def rl_argv(root: Path, init: Path, data: dict, cfg: dict) -> list[str]:
    return [
        "--method", "test", "--init", str(init), "--train", str(data["train"]),
        "--val", str(data["val"]), "--config", json.dumps(cfg), "--out", str(root / "model"),
        "--metrics", str(root / "metrics.json"), "--log", str(root / "train_log.jsonl"),
        "--work", str(root / "work"),
    ]  # fmt: skip


def read_log(root: Path) -> list[dict]:
    rows = [json.loads(line) for line in (root / "train_log.jsonl").read_text().splitlines()]
    return [r for r in rows if "rl/reward" in r]


def fixed_batch(processor, inst, texts: list[str]) -> onpolicy.Batch:
    """A batch of given replies to one instance, as if sampled from the picture prompt."""
    gens = []
    for t in texts:
        ids = text_ids(processor, t)
        gens.append(Generation(ids, t, [0.0] * len(ids), True))
    example = make_example("student", inst, "compact", with_reply=False)
    return onpolicy.Batch([inst] * len(texts), [example] * len(texts), gens)


def test_the_reward_is_the_puzzle_scorers_on_fixed_replies(tiny, insts):
    """A group of four replies to one maze: the optimal plan, its first move alone, an illegal
    first move and no plan. Each reward by the rl section's weights, their group advantages and
    the loss at ratio 1, all through the loop's own step."""
    model, processor = tiny
    inst = next(x for x in insts if x.puzzle == "maze" and len(x.plan) >= 2)
    plan, d = inst.plan, len(inst.plan)
    maze = puzzles.get("maze")
    wrong = next(a for a in maze.ACTIONS if maze.simulate(inst.state, [a]).illegal_kind)
    texts = [
        f"<answer>{' '.join(plan)}</answer>",  # reaches the goal: progress 1
        f"<answer>{plan[0]}</answer>",  # one good move, then stops: progress 1 / d
        f"<answer>{wrong}</answer>",  # illegal at once: progress 0
        "I cannot tell.",  # unparsed
    ]
    cfg = RLConfig(
        steps=1, batch_size=1, samples_per_prompt=4, max_new_tokens=8, lr=1e-3,
        success_reward=1.0, progress_reward=0.5, unparsed_penalty=1.0, illegal_penalty=0.25,
        advantage_eps=1e-6,
    )  # fmt: skip
    want = torch.tensor([1.0 + 0.5, 0.5 / d, -0.25, -1.0], dtype=torch.float64)
    batch = fixed_batch(processor, inst, texts)
    allowed_V = support.support_mask(processor.tokenizer, support.output_rows(model))
    loss, st = rl.rl_step(model, {}, processor, batch, cfg, common.setup(0), allowed_V, update=0)
    assert st["reward"] == pytest.approx(want.mean().item())
    assert (st["success"], st["unparsed"], st["illegal"]) == (0.25, 0.25, 0.25)
    assert st["progress"] == pytest.approx((1 + 1 / d) / 4)
    adv = (want - want.mean()) / (want.std(unbiased=False) + 1e-6)
    assert batch.cache["advantage_B"].double().tolist() == pytest.approx(adv.tolist(), abs=1e-5)
    lengths = torch.tensor([len(g.token_ids) for g in batch.gens], dtype=torch.float64)
    assert loss.item() == pytest.approx(
        -(adv * lengths).sum().item() / lengths.sum().item(), abs=1e-5
    )
    assert st["zero_groups"] == 0 and st["clip_frac"] == 0 and st["ratio_mean"] == pytest.approx(1)

    # four copies of one reply: nothing to learn, whatever the reward
    same = fixed_batch(processor, inst, texts[:1] * 4)
    loss, st = rl.rl_step(model, {}, processor, same, cfg, common.setup(0), allowed_V, update=0)
    assert st["zero_groups"] == 1 and loss.item() == 0
    assert torch.equal(same.cache["advantage_B"], torch.zeros(4))


def reply_logprob(model_dir: Path, insts, reply_ids: list[int]) -> float:
    """Mean over instances of log p(reply | picture prompt)."""
    model, processor = load_model(model_dir, device="cpu", trainable=False)
    examples = [make_example("student", x, "compact", with_reply=False) for x in insts]
    allowed_V = support.support_mask(processor.tokenizer, support.output_rows(model))
    with torch.no_grad():
        s = onpolicy.score(model, processor, examples, [reply_ids] * len(examples), allowed_V)
    return (s.logprobs() * s.valid).sum(1).mean().item()


LEARN = {
    "steps": 20, "batch_size": 4, "samples_per_prompt": 8, "max_new_tokens": 16, "lr": 1e-2,
    "weight_decay": 0.0, "checkpoint_every": 0, "val_instances": 1, "seed": 0,
}  # fmt: skip


@pytest.mark.slow
def test_a_reward_for_one_reply_raises_its_probability(tiny_model_dir, data, insts, tmp_path,
                                                        monkeypatch):  # fmt: skip
    """The reward pays for the share of one token X in the reply, so the reply X X X ... is the
    best one: within 20 steps from the random backbone its log-probability rises far, and the
    samples' mean reward with it."""
    _, processor = load_model(tiny_model_dir, device="cpu", trainable=False)
    x = text_ids(processor, "R")[0]
    target = [x] * 8

    def pays_for_x(batch, scores, cfg):
        return [g.token_ids.count(x) / max(len(g.token_ids), 1) for g in batch.gens]

    monkeypatch.setattr(rl, "rewards_of", pays_for_x)
    before = reply_logprob(tiny_model_dir, insts, target)
    assert rl.main(rl_argv(tmp_path, tiny_model_dir, data, LEARN)) == 0
    after = reply_logprob(tmp_path / "model", insts, target)
    rewards = [r["rl/reward"] for r in read_log(tmp_path)]
    assert len(rewards) == LEARN["steps"]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.1, rewards
    assert after > before + 10, (before, after)
    assert read_stage_info(tmp_path / "model")["stage"] == "rl"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["examples_seen"] == 20 * 4 * 8  # the budget in sampled replies


# a checkpoint every 2 of 6 steps; two updates per batch (the PPO ratio moves) and the KL term
# (the reference model is loaded): every part of the step that a resume must restore
RESUME = {
    "steps": 6, "batch_size": 2, "samples_per_prompt": 4, "max_new_tokens": 16, "lr": 1e-3,
    "checkpoint_every": 2, "val_instances": 1, "seed": 3, "updates_per_batch": 2,
    "kl_weight": 0.1,
}  # fmt: skip


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_weights_of_a_straight_run(
    tiny_model_dir, data, tmp_path
):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    argv = {r: rl_argv(r, tiny_model_dir, data, RESUME) for r in (straight, killed)}
    straight_and_killed("rl", "test", straight, killed, argv)
    a = load_file(straight / "model" / "model.safetensors")
    b = load_file(killed / "model" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    keys = ("rl/reward", "rl/kl", "rl/ratio_mean", "rl/loss", "train/grad_norm")
    log_a, log_b = read_log(straight), read_log(killed)
    assert [r["step"] for r in log_b] == list(range(1, RESUME["steps"] + 1))
    assert [[r[k] for k in keys] for r in log_a] == [[r[k] for k in keys] for r in log_b]
    # the second update of a batch sees a ratio off 1 and a KL off 0: both were exercised
    assert any(r["rl/kl"] > 0 for r in log_a), log_a
    assert any(abs(r["rl/ratio_mean"] - 1) > 1e-6 for r in log_a), log_a
    init = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(init[k], a[k]) for k in a)  # the runs did train
