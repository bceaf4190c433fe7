"""The shared training machinery (mgsd.train.common, mgsd.train.resume), one process, CPU."""

from __future__ import annotations

import json
import math
import os
import signal
import time

import pytest
import torch

from mgsd.config import ConfigError, DistillConfig, TrainConfig
from mgsd.io import write_atomic_json
from mgsd.train import common, resume
from mgsd.train.common import (
    JsonlLogger,
    Meter,
    batch_indices,
    explain_oom,
    make_optimizer,
    make_schedule,
    setup,
    shard,
)
from mgsd.train.resume import (
    EXIT_RESUMABLE,
    CheckpointError,
    StopSignal,
    checkpoint_meta,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def _lrs(steps: int, warmup_ratio: float, kind: str) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = make_schedule(opt, steps, warmup_ratio, kind)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"] / 2.0)
        opt.step()
        sched.step()
    return out


def test_cosine_schedule_warms_up_then_decays_to_zero():
    f = _lrs(10, 0.2, "cosine")
    assert f[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])  # 2 warmup steps, then the peak
    assert all(a > b for a, b in zip(f[2:], f[3:], strict=False))
    assert f[6] == pytest.approx(0.5)  # half way through the 8 decay steps
    assert 0 < f[-1] < 0.05


def test_constant_schedule_and_bad_kind():
    assert _lrs(10, 0.3, "constant") == pytest.approx([0.25, 0.5, 0.75] + [1.0] * 7)
    assert _lrs(4, 0.0, "constant") == [1.0] * 4
    with pytest.raises(ValueError, match="linear"):
        _lrs(4, 0.0, "linear")


def test_optimizer_decays_matrices_only_and_skips_frozen():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[2].requires_grad_(False)
    opt = make_optimizer(model.parameters(), lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and [p.shape for p in decay["params"]] == [(4, 3)]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3  # bias, norm w, b
    assert isinstance(opt, torch.optim.AdamW)


def test_batch_indices_pure_and_cover_each_epoch():
    n, b = 10, 4
    first = [batch_indices(n, b, seed=7, step=s) for s in range(5)]
    common._epoch_order.cache_clear()
    assert [batch_indices(n, b, seed=7, step=s) for s in range(5)] == first
    flat = [i for batch in first for i in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # a new order per epoch
    assert batch_indices(n, b, seed=8, step=0) != first[0]
    with pytest.raises(ValueError, match="batch=0"):
        batch_indices(n, 0, seed=7, step=0)


def test_shard_splits_global_batch():
    idx = batch_indices(100, 12, seed=0, step=3)
    parts = [shard(idx, r, 3) for r in range(3)]
    assert [i for p in parts for i in p] == idx and all(len(p) == 4 for p in parts)
    with pytest.raises(ValueError, match="not divisible by 5"):
        shard(idx, 0, 5)


def _model_opt_sched():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    model[1].requires_grad_(False)  # frozen parts are not saved
    opt = make_optimizer(model.parameters(), 1e-2, 0.01)
    return model, opt, make_schedule(opt, 20, 0.1)


def _train(model, opt, sched, steps):
    for _ in range(steps):
        loss = model(torch.randn(8, 3)).pow(2).mean()  # draws from the RNG, like dropout would
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def test_checkpoint_round_trip(tmp_path):
    acc = setup(0)
    model, opt, sched = _model_opt_sched()
    _train(model, opt, sched, 3)
    path = save_checkpoint(tmp_path, 3, model, opt, sched, acc, extra={"best": 0.5})
    assert path == tmp_path / "step-000003" and latest_checkpoint(tmp_path) == path
    assert "1.weight" not in torch.load(path / "model.pt")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, opt, sched, 2)
    after = [p.clone() for p in model.parameters()]

    assert load_checkpoint(path, model, opt, sched, acc) == 3
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert sched.last_epoch == 3 and checkpoint_meta(path)["extra"] == {"best": 0.5}
    _train(model, opt, sched, 2)  # optimizer moments and RNG restored: the same two steps
    assert all(torch.equal(a, p) for a, p in zip(after, model.parameters(), strict=True))


def test_checkpoints_keep_two_and_ignore_half_written(tmp_path):
    acc = setup(0)
    model, opt, sched = _model_opt_sched()
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, model, opt, sched, acc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000020", "step-000030"]
    (tmp_path / ".tmp-step-000050").mkdir()  # killed while writing
    half = tmp_path / "step-000040"  # no meta.json: not a checkpoint
    half.mkdir()
    (half / "model.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000030"
    assert latest_checkpoint(tmp_path / "missing") is None
    save_checkpoint(tmp_path, 60, model, opt, sched, acc)
    assert not (tmp_path / ".tmp-step-000050").exists()


def test_corrupt_checkpoint_names_the_file(tmp_path):
    acc = setup(0)
    model, opt, sched = _model_opt_sched()
    path = save_checkpoint(tmp_path, 5, model, opt, sched, acc)
    data = (path / "optimizer.pt").read_bytes()
    (path / "optimizer.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        load_checkpoint(path, model, opt, sched, acc)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="meta.json"):
        load_checkpoint(path, model, opt, sched, acc)
    other = torch.nn.Linear(3, 1)
    path = save_checkpoint(tmp_path, 6, model, opt, sched, acc)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_checkpoint(path, other, opt, sched, acc)


def test_logger_resume_drops_later_lines(tmp_path):
    path = tmp_path / "train_log.jsonl"
    log = JsonlLogger(path, 0, enabled=True)
    for s in range(1, 6):
        log.log(s, {"train/loss": torch.tensor(1.0 / s), "train/lr": 0.1})
    log.close()
    with path.open("a") as f:
        f.write('{"step": 6, "train/lo')  # the line a kill cut short
    log = JsonlLogger(path, 3, enabled=True)
    log.log(4, {"train/loss": 9.0})
    log.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert abs(rows[0].pop("time") - time.time()) < 60  # seconds since the epoch
    assert rows[0] == {"step": 1, "train/loss": 1.0, "train/lr": 0.1} and rows[3]["train/loss"] == 9
    JsonlLogger(path, 0, enabled=True).close()  # a fresh run starts an empty log
    assert path.read_text() == ""
    quiet = JsonlLogger(tmp_path / "rank1.jsonl", 0, enabled=False)
    quiet.log(1, {"x": 1})
    assert not (tmp_path / "rank1.jsonl").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_sets_flag_instead_of_dying(sig):
    stop = StopSignal()
    try:
        assert not stop.requested()
        os.kill(os.getpid(), sig)
        assert stop.requested() and stop.received == sig
    finally:
        stop.restore()
    assert signal.getsignal(sig) is not stop._handle
    with pytest.raises(SystemExit) as e:
        resume.exit_for_resume(12)
    assert e.value.code == EXIT_RESUMABLE == 75


def test_write_atomic_json(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    write_atomic_json(path, {"a": [1, 2]})
    write_atomic_json(path, {"a": 3})
    assert json.loads(path.read_text()) == {"a": 3}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_meter_reports_rate_and_memory():
    meter = Meter("cpu")
    meter.update(1000)
    stats = meter.stats("train")
    assert stats["train/tokens_per_s"] > 0 and stats["train/peak_mem_gb"] > 0.01
    assert meter.stats()["perf/tokens_per_s"] == 0  # counted since the last call


def test_explain_oom_names_the_stage_keys():
    with pytest.raises(torch.OutOfMemoryError, match="raise grounding.grad_accum") as e:
        with explain_oom("grounding"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
    assert "lower grounding.batch_size" in str(e.value) and "2 GiB" in str(e.value)
    with pytest.raises(torch.OutOfMemoryError, match="distill.max_new_tokens") as e:
        with explain_oom("distill"):
            raise torch.OutOfMemoryError("CUDA out of memory")
    assert "distill.teacher_offload: true" in str(e.value) and "grad_accum" not in str(e.value)
    with pytest.raises(KeyError), explain_oom("distill"):  # other errors pass unchanged
        raise KeyError("x")


def test_checkpoints_of_another_run_are_not_resumed(tmp_path):
    """Snakemake reruns a job after a config change: its old checkpoints must not be resumed."""
    acc = common.setup(0)
    model = torch.nn.Linear(3, 2)
    opt = common.make_optimizer(model.parameters(), 1e-3, 0.0)
    sched = common.make_schedule(opt, 10, 0.0, "constant")
    data = tmp_path / "train.parquet"
    data.write_bytes(b"x")
    fp = resume.run_fingerprint("grounding", '{"lr": 1}', files=[data])
    assert fp == resume.run_fingerprint("grounding", '{"lr": 1}', files=[data])
    assert fp != resume.run_fingerprint("grounding", '{"lr": 2}', files=[data])
    work = tmp_path / "work"
    resume.save_checkpoint(work, 4, model, opt, sched, acc, extra={"fingerprint": fp})
    assert resume.resume_checkpoint(work, fp, acc) == work / "step-000004"
    data.write_bytes(b"new data")  # the inputs changed: another run
    other = resume.run_fingerprint("grounding", '{"lr": 1}', files=[data])
    assert other != fp
    assert resume.resume_checkpoint(work, other, acc) is None
    assert resume.checkpoints(work) == []


def test_a_non_finite_gradient_skips_the_update_and_too_many_stop_the_run():
    """Through the clip a NaN gradient would make every weight NaN: the step is skipped, the
    schedule goes on, and a run of skips raises an error naming the stage."""
    acc = setup(0)
    model = torch.nn.Linear(3, 2)
    opt = make_optimizer(model.parameters(), 0.1, 0.0)
    sched = make_schedule(opt, 50, 0.0, "constant")
    up = common.Updater(acc, opt, sched, list(model.parameters()), 1.0, "grounding")
    x = torch.ones(4, 3)

    def backward(scale: float):
        (model(x).sum() * scale).backward()

    backward(1.0)
    assert 0 < up.step() < float("inf") and up.skipped == 0
    before = [p.detach().clone() for p in model.parameters()]
    backward(float("nan"))
    assert math.isnan(up.step())  # the norm is reported, the update is not made
    assert up.skipped == 1 and all(
        torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )
    assert all(p.grad is None for p in model.parameters())  # nothing carried to the next step
    assert sched.last_epoch == 2  # the schedule still counts the skipped step
    backward(1.0)
    up.step()
    assert up.in_a_row == 0 and all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(common.NonFiniteUpdates, match="grounding: the gradient was not finite"):
        for _ in range(common.MAX_NONFINITE_IN_A_ROW):
            backward(float("inf"))
            up.step()
    assert up.skipped == 1 + common.MAX_NONFINITE_IN_A_ROW


class _Recorder:
    """A stand-in accelerate tracker that keeps what it is given."""

    name, requires_logging_directory, runs = "recorder", False, []

    def __init__(self, run_name):
        self.run_name, self.config, self.logged, self.done = run_name, {}, [], 0
        _Recorder.runs.append(self)

    def start(self):
        pass

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None):
        self.logged.append((step, values))

    def finish(self):
        self.done += 1


def test_trackers_get_the_metrics_of_the_log(tmp_path, monkeypatch):
    """`log_with` feeds accelerate's trackers the numbers of every JSONL line, at its step."""
    import accelerate.tracking

    monkeypatch.setitem(accelerate.tracking.LOGGER_TYPE_TO_CLASS, "wandb", _Recorder)
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: ["wandb"])
    _Recorder.runs = []
    cfg = TrainConfig(steps=4, batch_size=2, lr=1e-3, log_with=("wandb",))
    path = tmp_path / "train_log.jsonl"
    log = JsonlLogger(path, 0, enabled=True, cfg=cfg, name="grounding")
    log.log(1, {"train/loss": torch.tensor(0.5), "train/lr": 1e-3})
    log.log(4, {"val/success": 0.25, "note": "text", "flag": True})
    log.close()
    (run,) = _Recorder.runs
    assert run.run_name == "mgsd" and run.done == 1
    assert run.config["stage"] == "grounding" and run.config["lr"] == 1e-3
    assert run.config["lora/rank"] == 8 and run.config["log_with"] == '["wandb"]'
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["total_steps"] for r in rows] == [4, 4]
    assert run.logged == [
        (1, {"train/loss": 0.5, "train/lr": 1e-3}),
        (4, {"val/success": 0.25}),  # numbers only, as in the JSONL line
    ]
    assert {k: rows[0][k] for k in run.logged[0][1]} == run.logged[0][1]


def test_a_missing_tracker_names_the_key_and_what_to_install(tmp_path, monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    cfg = TrainConfig(steps=4, batch_size=2, lr=1e-3, log_with=("tensorboard",))
    with pytest.raises(ConfigError, match=r"grounding.log_with: tensorboard is not installed "
                       r"\(pip install 'mgsd\[track\]'\)"):  # fmt: skip
        JsonlLogger(tmp_path / "log.jsonl", 0, enabled=True, cfg=cfg, name="grounding")
    distill = DistillConfig(steps=4, batch_size=2, max_new_tokens=8, lr=1e-3, log_with=("wandb",))
    with pytest.raises(ConfigError, match=r"^distill.log_with: wandb is not installed"):
        JsonlLogger(tmp_path / "log.jsonl", 0, enabled=True, cfg=distill, name="mgsd")


def test_tensorboard_tracker_writes_the_log_metrics_and_a_resume_hides_the_redone_steps(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(steps=6, batch_size=2, lr=1e-3, log_with=("tensorboard",))
    path = tmp_path / "train_log.jsonl"
    log = JsonlLogger(path, 0, enabled=True, cfg=cfg, name="grounding")
    for s in range(1, 5):
        log.log(s, {"train/loss": 1.0 / s})
    log.close()
    log = JsonlLogger(path, 2, enabled=True, cfg=cfg, name="grounding")  # resumed at step 2
    for s in range(3, 7):
        log.log(s, {"train/loss": 10.0 * s})
    log.close()
    events = EventAccumulator(str(tmp_path / "tracking" / "grounding"))
    events.Reload()
    seen = {e.step: e.value for e in events.Scalars("train/loss")}
    rows = {r["step"]: r["train/loss"] for r in map(json.loads, path.read_text().splitlines())}
    assert seen == pytest.approx(rows) and rows[2] == 0.5 and rows[4] == 40.0
