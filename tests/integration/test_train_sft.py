"""`mgsd train-sft` end to end on the tiny scratch backbone (CPU).

Each stage overfits 8 examples through the real entry point; LoRA adapters merge into the same
function; a run killed with SIGKILL resumes to the very weights of a straight run; SIGTERM saves
a checkpoint and exits 75; two processes (gloo) follow the one-process loss curve; bad input
fails with a message that names the bad path, file or key.

The data are 8 generated instances, one per (puzzle, side), and the validation file is the
training file: these are overfitting tests, so the final greedy validation measures
memorisation. One instance per (puzzle, side) because the from-scratch vision tower of the tiny
backbone is slow to tell apart two pictures of the same puzzle and side (8 frozenlake pictures of
side 3 took 200-300+ steps at lr 3e-3; after 100 steps, the image features of two side-2
pictures that differ in two cells were still within 3% of each other), while pictures of
different sides and puzzles differ at a glance: the loop is what these tests check.

In-process runs call `sft.main(argv)` on one thread (more threads only wait on small shared CI
hosts); runs that must be killed or launched on two processes are subprocesses of
`python -m mgsd.cli train-sft`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mgsd.config import LoraConfig
from mgsd.data import records
from mgsd.data.splits import generate_rows
from mgsd.model.batching import collate_train
from mgsd.model.generate import generate
from mgsd.model.load import load_model, read_stage_info
from mgsd.model.lora import apply_lora, merge_lora
from mgsd.model.tasks import STAGE_TASK, load_instances, make_example, task_success
from mgsd.train import sft
from mgsd.train.resume import EXIT_RESUMABLE, lock_work_dir

INSTANCES = (  # (puzzle, side): one instance each, see the module docstring
    ("frozenlake", 3),
    ("frozenlake", 4),
    ("frozenlake", 5),
    ("frozenlake", 6),
    ("maze", 2),
    ("maze", 3),
    ("minibehaviour", 4),
    ("minibehaviour", 5),
)
DATA_SEED = 1
MAX_REPLY_TOKENS = 128  # the longest target (frozenlake side 6) has 79 tokens
# Overfits every stage on data seeds 1-5 (all 8 replies exact; final loss ~0.001 of the start).
# The cosine decay matters: at a constant 3e-3 the loss spikes late (Adam at low loss) and
# up to 3 replies of 8 stayed wrong after 150 steps; 150 cosine steps left 1 grounding reply
# wrong on 2 seeds of 4; lr 5e-3 stalled on a plateau in some runs.
LEARN = {"steps": 200, "batch_size": 8, "lr": 4e-3, "schedule": "cosine", "warmup_ratio": 0.05}
# CPU only (exact float results, gloo for 2 processes), one thread per process
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
SFT_CLI = [sys.executable, "-m", "mgsd.cli", "train-sft"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory, tiny_image_size: int) -> Path:
    rows = [
        row
        for puzzle, side in INSTANCES
        for row in generate_rows(
            puzzle, "train", [side], 1, DATA_SEED, tiny_image_size, set(), {}, progress=False
        )
    ]
    return records.write_data(rows, tmp_path_factory.mktemp("sft-data") / "train.parquet")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sft_args(stage: str, init: Path, data: Path, cfg: dict, run: Path) -> list[str]:
    """Arguments of `mgsd train-sft` with every output under `run` (val = train, see above)."""
    return [
        "--stage", stage, "--init", str(init), "--train", str(data), "--val", str(data),
        "--config", json.dumps(cfg), "--out", str(run / "model"),
        "--metrics", str(run / "metrics.json"), "--log", str(run / "train_log.jsonl"),
        "--work", str(run / "work"),
    ]  # fmt: skip


def read_log(run: Path) -> list[dict]:
    path = run / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def train_rows(run: Path) -> list[dict]:
    """The per-step rows of the log (train/*), without the throughput and time that differ per
    run."""
    rows = [r for r in read_log(run) if "train/loss" in r]
    return [{k: v for k, v in r.items() if not k.startswith("perf/") and k != "time"} for r in rows]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SFT_CLI, *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"training exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ---------------------------------------------------------------- learning


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["symbolic_pretrain", "grounding", "sft_direct"])
def test_each_stage_overfits_eight_examples(stage, tiny_model_dir, data_file, tmp_path, one_thread):
    cfg = {
        **LEARN,
        "checkpoint_every": 0,
        "val_instances": len(INSTANCES),
        "val_max_new_tokens": MAX_REPLY_TOKENS,
    }
    assert sft.main(sft_args(stage, tiny_model_dir, data_file, cfg, tmp_path)) == 0

    losses = [r["train/loss"] for r in train_rows(tmp_path)]
    assert len(losses) == LEARN["steps"]
    assert losses[-1] < 0.1 * losses[0], losses[:: LEARN["steps"] // 10]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val/success"] == 1.0 and metrics["steps"] == LEARN["steps"]
    assert read_stage_info(tmp_path / "model")["stage"] == stage

    # the saved folder, reloaded, says every target exactly (independent of the loop's own
    # validation: prompts at training time and at generation time must agree)
    model, processor = load_model(tmp_path / "model", device="cpu", trainable=False)
    task, insts = STAGE_TASK[stage], load_instances([str(data_file)])
    prompts = [make_example(task, x, "compact", with_reply=False) for x in insts]
    replies = generate(model, processor, prompts, max_new_tokens=MAX_REPLY_TOKENS)
    for inst, reply in zip(insts, replies, strict=True):
        assert reply.text == make_example(task, inst, "compact").reply, inst.id
        assert task_success(task, inst, reply.text), inst.id


@pytest.mark.slow
def test_grounding_under_the_student_prompt_learns_to_state(
    tiny_model_dir, data_file, tmp_path, one_thread
):
    """`grounding_prompt: student`: the state is learnt as the start of the student's reply."""
    cfg = {**LEARN, "checkpoint_every": 0, "val_instances": len(INSTANCES),
           "val_max_new_tokens": MAX_REPLY_TOKENS, "grounding_prompt": "student"}  # fmt: skip
    assert sft.main(sft_args("grounding", tiny_model_dir, data_file, cfg, tmp_path)) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["val/success"] == 1.0
    model, processor = load_model(tmp_path / "model", device="cpu", trainable=False)
    insts = load_instances([str(data_file)])
    examples = [make_example("grounding_student", x, "compact", with_reply=False) for x in insts]
    assert all("image" in str(e.messages) for e in examples)  # the student's picture prompt
    assert examples[0].messages == make_example("student", insts[0], "compact").messages
    replies = generate(model, processor, examples, max_new_tokens=MAX_REPLY_TOKENS)
    for inst, reply in zip(insts, replies, strict=True):
        assert reply.text.startswith(make_example("grounding_student", inst, "compact").reply)


MIX = {
    "symbolic": {"weight": 0.4},
    "oracle": {"weight": 0.2},
    "perception": {"weight": 0.3},
    "student": {"weight": 0.1, "sides": 1},
}


@pytest.mark.slow
def test_a_mix_trains_the_drawn_tasks_and_validates_each(
    tiny_model_dir, data_file, tmp_path, one_thread, monkeypatch
):
    """The loop's examples are exactly the mixture's draws (task, instance, question), and its
    validation reports every task of the mix and the real task."""
    from mgsd.config import MixEntry
    from mgsd.model.tasks import Mixture

    built = []
    real = sft.make_example

    def spy(task, inst, style, with_reply=True, end=True, variant=0):
        if with_reply:
            built.append((task, inst.id, variant))
        return real(task, inst, style, with_reply, end, variant)

    monkeypatch.setattr(sft, "make_example", spy)
    steps = 30
    cfg = {**LEARN, "steps": steps, "checkpoint_every": 0, "val_instances": 4, "mix": MIX,
           "val_max_new_tokens": MAX_REPLY_TOKENS}  # fmt: skip
    assert sft.main(sft_args("symbolic_pretrain", tiny_model_dir, data_file, cfg, tmp_path)) == 0
    insts = load_instances([str(data_file)])
    mixture = Mixture({k: MixEntry(**v) for k, v in MIX.items()}, "symbolic", insts, 0)
    from mgsd.train.common import batch_indices

    expected = []
    for step in range(steps):
        for slot in mixture.slots(batch_indices(len(insts), LEARN["batch_size"], 0, step), step):
            expected.append((slot.task, insts[slot.index].id, slot.variant))
    training = [b for b in built if b[0] in MIX][: len(expected)]
    assert training == expected
    assert {t for t, *_ in expected} == set(MIX)
    small = {x.id for x in insts if (x.puzzle, x.level) in {("frozenlake", 3), ("maze", 2),
                                                              ("minibehaviour", 4)}}  # fmt: skip
    assert {i for t, i, _ in expected if t == "student"} <= small
    final = json.loads((tmp_path / "metrics.json").read_text())
    assert {"val/success", "val/oracle/success", "val/perception/success"} <= set(final)
    assert "val/student/success" in final  # the real task, trained or not
    losses = [r["train/loss"] for r in train_rows(tmp_path)]
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


def test_one_non_finite_gradient_is_skipped_not_spread_to_every_weight(
    tiny_model_dir, data_file, tmp_path, one_thread, monkeypatch
):
    """A batch whose gradient is NaN (what bf16 overflow does on a GPU) skips its update; the run
    goes on and ends with finite weights, and the log counts the skipped step."""
    from mgsd.train import losses

    real, calls = losses.sft_loss, []

    def poisoned(logits, labels):
        loss, st = real(logits, labels)
        calls.append(1)
        return (loss * float("nan"), st) if len(calls) == 3 else (loss, st)

    monkeypatch.setattr(losses, "sft_loss", poisoned)
    cfg = {**LEARN, "steps": 6, "checkpoint_every": 0, "val_instances": 1}
    assert sft.main(sft_args("sft_direct", tiny_model_dir, data_file, cfg, tmp_path)) == 0
    rows = train_rows(tmp_path)
    assert [r["train/skipped_steps"] for r in rows] == [0, 0, 1, 1, 1, 1]
    assert all(torch.isfinite(w).all() for w in weights(tmp_path).values())


def test_batches_built_by_worker_processes_train_the_same_weights(
    tiny_model_dir, data_file, tmp_path, one_thread
):
    """`data_workers` only moves where the batches are built: a mixed stage trained with two
    worker processes ends with exactly the weights of the in-loop run."""
    cfg = {**LEARN, "steps": 5, "checkpoint_every": 0, "val_instances": 1, "mix": MIX,
           "val_max_new_tokens": 8}  # fmt: skip
    runs = {}
    for workers in (0, 2):
        runs[workers] = tmp_path / f"w{workers}"
        args = sft_args(
            "symbolic_pretrain", tiny_model_dir, data_file, {**cfg, "data_workers": workers},
            runs[workers],
        )  # fmt: skip
        assert sft.main(args) == 0
    assert train_rows(runs[0]) == train_rows(runs[2])
    a, b = weights(runs[0]), weights(runs[2])
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_compiled_layers_follow_the_eager_loss_curve(
    tiny_model_dir, data_file, tmp_path, one_thread
):
    """`compile: true` (torch.compile per layer) trains and validates like the eager loop."""
    cfg = {**LEARN, "steps": 6, "checkpoint_every": 0, "val_instances": 2,
           "val_max_new_tokens": 16}  # fmt: skip
    from torch._dynamo.utils import counters

    counters.clear()
    curves = {}
    for compiled in (False, True):
        run = tmp_path / str(compiled)
        args = sft_args("grounding", tiny_model_dir, data_file, {**cfg, "compile": compiled}, run)
        assert sft.main(args) == 0
        curves[compiled] = [r["train/loss"] for r in train_rows(run)]
    assert counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert len(curves[True]) == cfg["steps"]
    assert curves[True] == pytest.approx(curves[False], rel=1e-4)


# ---------------------------------------------------------------- LoRA


def test_lora_merged_and_unmerged_give_the_same_logits(tiny_model_dir, data_file):
    model, processor = load_model(tiny_model_dir, device="cpu", trainable=True)
    model.eval()
    insts = load_instances([str(data_file)])
    batch = collate_train(processor, [make_example("student", x, "compact") for x in insts])
    batch.pop("labels")
    with torch.no_grad():
        base_BTV = model(**batch).logits

    peft = apply_lora(model, LoraConfig(rank=4, alpha=8.0), train_vision=True)
    trainable = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("visual" in n for n in trainable)  # train_vision: the vision tower too
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # lora_B starts at 0; nonzero adapters make the merge matter
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
        lora_BTV = peft(**batch).logits
        merged = merge_lora(peft)
        merged_BTV = merged(**batch).logits

    assert (lora_BTV - base_BTV).abs().max() > 1e-2  # the adapters change the function
    assert not hasattr(merged, "peft_config")
    assert not any("lora" in k for k in merged.state_dict())
    # fp32: merging W + s B A changes only the order of float operations
    torch.testing.assert_close(merged_BTV, lora_BTV, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_lora_run_saves_a_plain_model(tiny_model_dir, data_file, tmp_path, one_thread):
    cfg = {
        "steps": 4, "batch_size": 8, "lr": 1e-2, "finetune": "lora", "train_vision": False,
        "lora": {"rank": 4, "alpha": 8.0}, "checkpoint_every": 2, "keep_checkpoints": True,
        "val_instances": 2,
        "val_max_new_tokens": 8,
    }  # fmt: skip
    handler = signal.getsignal(signal.SIGTERM)
    assert sft.main(sft_args("grounding", tiny_model_dir, data_file, cfg, tmp_path)) == 0
    assert signal.getsignal(signal.SIGTERM) is handler  # the loop gave SIGTERM back

    saved = torch.load(tmp_path / "work" / "step-000002" / "model.pt", weights_only=True)
    assert saved and all("lora_" in k and "visual" not in k for k in saved)  # adapters only
    init, out = load_file(tiny_model_dir / "model.safetensors"), weights(tmp_path)
    assert set(out) == set(init)  # a plain model: no adapter, no peft prefix
    changed = {k for k in init if not torch.equal(init[k], out[k])}
    assert changed and all(k.endswith("proj.weight") for k in changed)  # merged linear layers
    assert not any("visual" in k or "embed" in k or "norm" in k for k in changed)
    model, _ = load_model(tmp_path / "model", device="cpu")
    assert not hasattr(model, "peft_config")


@pytest.mark.slow
def test_checkpoints_go_once_the_model_is_written_unless_kept(
    tiny_model_dir, data_file, tmp_path, one_thread
):
    cfg = {"steps": 4, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 1, "val_instances": 1}
    assert sft.main(sft_args("sft_direct", tiny_model_dir, data_file, cfg, tmp_path / "a")) == 0
    assert not list((tmp_path / "a" / "work").glob("*step-*"))  # weights and optimizer gone
    assert (tmp_path / "a" / "model" / "model.safetensors").is_file()
    assert len(train_rows(tmp_path / "a")) == 4  # the live log stays
    kept = {**cfg, "keep_checkpoints": True}
    assert sft.main(sft_args("sft_direct", tiny_model_dir, data_file, kept, tmp_path / "b")) == 0
    assert [p.name for p in sorted((tmp_path / "b" / "work").glob("step-*"))] == [
        "step-000002", "step-000003",
    ]  # fmt: skip


# ---------------------------------------------------------------- resume and stop

RESUME = {  # a cosine schedule over 20 steps: resuming must restore it, not restart it
    "steps": 20, "batch_size": 12, "grad_accum": 2, "lr": 3e-3, "warmup_ratio": 0.2,
    "checkpoint_every": 5, "val_instances": 2, "val_max_new_tokens": 8,
}  # fmt: skip


@pytest.mark.slow
def test_sigkill_then_resume_equals_straight_run(tiny_model_dir, data_file, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # batches of 12 from 8 examples straddle epochs: the data order matters at every step
    done = run_cli(sft_args("sft_direct", tiny_model_dir, data_file, RESUME, straight))
    assert done.returncode == 0, done.stderr[-3000:]

    args = sft_args("sft_direct", tiny_model_dir, data_file, RESUME, killed)
    proc = subprocess.Popen(
        [*SFT_CLI, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt10 = killed / "work" / "step-000010"
    wait_for(ckpt10.is_dir, proc, "the step-10 checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (killed / "model").exists(), "the run finished before it was killed"

    resumed = run_cli(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming sft_direct from" in resumed.stderr
    # exact on CPU fp32: same operations on the same data, optimizer, schedule and RNG state
    a, b = weights(straight), weights(killed)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    rows = train_rows(killed)
    assert [r["step"] for r in rows] == list(range(1, 21))  # no step lost or logged twice
    assert rows == train_rows(straight)


@pytest.mark.slow
def test_a_second_run_on_a_live_work_folder_stops_at_once(
    tiny_model_dir, data_file, tmp_path, capsys
):
    """Two writers on one resume folder would interleave checkpoints: the second run fails
    with a message naming the first one's pid, and the folder is free again once it is gone."""
    cfg = {**RESUME, "steps": 400}
    args = sft_args("sft_direct", tiny_model_dir, data_file, cfg, tmp_path)
    proc = subprocess.Popen(
        [*SFT_CLI, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        lock = tmp_path / "work" / ".lock"
        wait_for(lambda: lock.is_file() and lock.read_text().strip(), proc, "the lock")
        second = sft_args("sft_direct", tiny_model_dir, data_file, cfg, tmp_path / "second")
        second[second.index("--work") + 1] = str(tmp_path / "work")
        assert sft.main(second) == 1
        err = capsys.readouterr().err
        assert f"{tmp_path / 'work'} is in use by another run (pid {proc.pid})" in err
    finally:
        proc.kill()
        proc.wait(timeout=30)
    from accelerate import PartialState

    handle = lock_work_dir(tmp_path / "work", PartialState())
    assert handle is not None  # the killed run's lock went with it
    handle.close()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_75(tiny_model_dir, data_file, tmp_path):
    cfg = {**RESUME, "steps": 1000, "checkpoint_every": 0}  # only the signal saves
    args = sft_args("symbolic_pretrain", tiny_model_dir, data_file, cfg, tmp_path)
    proc = subprocess.Popen(
        [*SFT_CLI, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: len(read_log(tmp_path)) >= 3, proc, "step 3")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_RESUMABLE == 75, stderr[-3000:]
    assert "stopped by signal" in stderr
    stopped_at = read_log(tmp_path)[-1]["step"]
    ckpt = tmp_path / "work" / f"step-{stopped_at:06d}"
    assert json.loads((ckpt / "meta.json").read_text())["step"] == stopped_at
    assert (ckpt / "model.pt").is_file() and not (tmp_path / "model").exists()


# ---------------------------------------------------------------- two processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
# sft_direct: pictures sharded over processes; symbolic_pretrain: text only, so the vision tower
# gets no gradient, which DDP refuses unless the loop freezes it
@pytest.mark.parametrize("stage", ["sft_direct", "symbolic_pretrain"])
def test_two_processes_follow_the_one_process_loss_curve(
    stage, tiny_model_dir, data_file, tmp_path
):
    one, two = tmp_path / "one", tmp_path / "two"
    cfg = {
        "steps": 4, "batch_size": 8, "lr": 3e-3, "checkpoint_every": 2, "keep_checkpoints": True,
        "val_instances": 2,
        "val_max_new_tokens": 8,
    }  # fmt: skip
    # On a CPU-only machine `--cpu --num_processes 2` starts ONE process in accelerate 1.15;
    # `--multi_gpu` goes through torchrun and common.setup then picks gloo.
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), "-m", "mgsd.cli", "train-sft",
        *sft_args(stage, tiny_model_dir, data_file, cfg, two),
    ]  # fmt: skip
    ddp = subprocess.run(launch, env=ENV, capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert (two / "work" / "step-000002" / "rng-1.pt").is_file()  # both ranks took part
    single = run_cli(sft_args(stage, tiny_model_dir, data_file, cfg, one))
    assert single.returncode == 0, single.stderr[-3000:]

    rows_one, rows_two = train_rows(one), train_rows(two)
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_two] == [1, 2, 3, 4]
    assert [r["train/tokens"] for r in rows_one] == [r["train/tokens"] for r in rows_two]
    loss_one = torch.tensor([r["train/loss"] for r in rows_one])
    loss_two = torch.tensor([r["train/loss"] for r in rows_two])
    # Same global batch: only the order of float sums differs (padding per process, all-reduce)
    torch.testing.assert_close(loss_two, loss_one, rtol=1e-5, atol=1e-6)
    assert loss_one[-1] < loss_one[0]  # it did learn
    a, b = weights(one), weights(two)  # measured: at most 5e-6 apart after 4 steps
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=5e-5) for k in a)


# ---------------------------------------------------------------- bad input


def test_missing_model_path_is_a_clear_error(tiny_model_dir, data_file, tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    cfg = {"steps": 2, "batch_size": 8, "lr": 1e-3}
    assert sft.main(sft_args("grounding", missing, data_file, cfg, tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert f"model folder {missing} does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "model").exists()


def test_unknown_config_key_is_named(tiny_model_dir, data_file, tmp_path, capsys):
    cfg = {"steps": 2, "batch_size": 8, "lr": 1e-3, "learning_rate": 1e-3}
    assert sft.main(sft_args("grounding", tiny_model_dir, data_file, cfg, tmp_path)) == 1
    assert "unknown key grounding.learning_rate" in capsys.readouterr().err


@pytest.mark.slow
def test_corrupt_checkpoint_is_named(tiny_model_dir, data_file, tmp_path, capsys, one_thread):
    cfg = {"steps": 3, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 2, "val_instances": 1,
           "keep_checkpoints": True}  # fmt: skip
    args = sft_args("symbolic_pretrain", tiny_model_dir, data_file, cfg, tmp_path)
    assert sft.main(args) == 0
    weights_file = tmp_path / "work" / "step-000002" / "model.pt"
    weights_file.write_bytes(weights_file.read_bytes()[:100])  # a write cut short
    capsys.readouterr()

    assert sft.main(args) == 1
    err = capsys.readouterr().err
    assert f"corrupt or unreadable checkpoint file {weights_file}" in err
