"""Resume and multi-process training (mgsd.train.common, mgsd.train.resume) on a tiny torch model.

This file is also the training script the tests start: `python test_resume_ddp.py --work DIR`
trains a 2-layer MLP on fixed synthetic data with the shared pieces, in the shape the SFT and
distillation loops use (setup, seeded batches, checkpoint every K steps, stop on SIGTERM).
"""

from __future__ import annotations

import argparse
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

from mgsd.train import common, resume

pytestmark = pytest.mark.slow

N_EXAMPLES, GLOBAL_BATCH = 48, 8


def train(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--step-seconds", type=float, default=0.0, help="sleep per step")
    p.add_argument("--hang-after", type=int, default=0, help="stall after this step")
    args = p.parse_args(argv)

    acc = common.setup(cfg_seed=3)
    stop = resume.StopSignal()
    g = torch.Generator().manual_seed(1234)
    x_ND = torch.randn(N_EXAMPLES, 6, generator=g).to(acc.device)
    y_N1 = torch.sin(x_ND.sum(1, keepdim=True))
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 32),
        torch.nn.Tanh(),
        torch.nn.Dropout(args.dropout),
        torch.nn.Linear(32, 1),
    )
    opt = common.make_optimizer(model.parameters(), lr=3e-2, weight_decay=0.01)
    sched = common.make_schedule(opt, args.steps, warmup_ratio=0.2, kind="cosine")
    model, opt = acc.prepare(model, opt)
    ckpt = resume.latest_checkpoint(args.work)
    start = resume.load_checkpoint(ckpt, model, opt, sched, acc) if ckpt else 0
    log = common.JsonlLogger(args.work / "train_log.jsonl", start)

    for step in range(start, args.steps):
        batch = common.batch_indices(N_EXAMPLES, GLOBAL_BATCH, seed=3, step=step)
        ids = common.shard(batch, acc.process_index, acc.num_processes)
        loss = torch.nn.functional.mse_loss(model(x_ND[ids]), y_N1[ids])
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        lr = sched.get_last_lr()[0]
        seen = acc.reduce(torch.tensor(len(ids)), "sum")  # the global batch, not N times it
        metrics = {"train/loss": acc.reduce(loss.detach(), "mean"), "train/lr": lr}
        log.log(step + 1, {**metrics, "train/examples": seen})
        time.sleep(args.step_seconds)
        stopping = stop.requested(acc)
        if (step + 1) % args.checkpoint_every == 0 or stopping:
            resume.save_checkpoint(args.work, step + 1, model, opt, sched, acc, {"note": "toy"})
        if stopping:
            resume.exit_for_resume(step + 1)
        if step + 1 == args.hang_after:
            time.sleep(600)  # a job that hangs until it is killed
    if acc.is_main_process:
        torch.save(acc.unwrap_model(model).state_dict(), args.work / "final.pt")
    log.close()
    return 0


# ---------------------------------------------------------------- tests

SCRIPT = Path(__file__).resolve()
# CPU only (exact float results, gloo for 2 processes), one thread per process on small CI hosts
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _run(work: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--work", str(work), *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)


def _log(work: Path) -> list[dict]:
    """The log's rows without their time (it differs per run)."""
    path = work / "train_log.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"training exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _weights(work: Path) -> dict[str, torch.Tensor]:
    return torch.load(work / "final.pt")


def test_sigkill_then_resume_equals_straight_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _run(straight).returncode == 0
    cmd = [sys.executable, str(SCRIPT), "--work", str(killed), "--hang-after", "12"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: len(_log(killed)) == 12, proc, "step 12")  # past the step-10 checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert [p.name for p in killed.glob("step-*")] == ["step-000010"]

    result = _run(killed)
    assert result.returncode == 0, result.stderr
    a, b = _weights(straight), _weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # exact: same ops, same data, same RNG on CPU
    rows = _log(killed)
    assert [r["step"] for r in rows] == list(range(1, 21))  # steps 11-12 were dropped, redone once
    assert rows == _log(straight)


def test_sigterm_saves_checkpoint_and_exits_75(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--work", str(tmp_path), "--steps", "200"]
    proc = subprocess.Popen(
        [*cmd, "--step-seconds", "0.05"], env=ENV, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: len(_log(tmp_path)) >= 3, proc, "step 3")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 75, stderr
    stopped_at = _log(tmp_path)[-1]["step"]
    assert 3 <= stopped_at < 200 and "stopped by signal" in stderr
    ckpt = tmp_path / f"step-{stopped_at:06d}"
    assert ckpt.is_dir() and json.loads((ckpt / "meta.json").read_text())["step"] == stopped_at

    done = _run(tmp_path, "--steps", str(stopped_at + 2))
    assert done.returncode == 0, done.stderr
    assert [r["step"] for r in _log(tmp_path)] == list(range(1, stopped_at + 3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_follow_the_one_process_loss_curve(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--work", str(two), "--steps", "8", "--dropout", "0", "--checkpoint-every", "4"]
    # On a CPU-only machine `--cpu --num_processes 2` starts ONE process in accelerate 1.15;
    # `--multi_gpu` goes through torchrun and setup() then picks gloo.
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(SCRIPT), *args,
    ]  # fmt: skip
    ddp = subprocess.run(launch, env=ENV, capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert (two / "step-000008" / "rng-1.pt").is_file()  # both ranks took part
    single = _run(one, "--steps", "8", "--dropout", "0", "--checkpoint-every", "4")
    assert single.returncode == 0, single.stderr

    loss_one = torch.tensor([r["train/loss"] for r in _log(one)])
    loss_two = torch.tensor([r["train/loss"] for r in _log(two)])
    assert len(loss_one) == len(loss_two) == 8
    assert all(r["train/examples"] == GLOBAL_BATCH for r in _log(one) + _log(two))
    # Same global batch of 8: only the order of float sums differs (gradient all-reduce).
    assert torch.allclose(loss_one, loss_two, rtol=1e-5, atol=1e-7), (loss_one, loss_two)
    assert loss_one[-1] < loss_one[0]  # it did learn
    a, b = _weights(one), _weights(two)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


if __name__ == "__main__":
    sys.exit(train(sys.argv[1:]))
