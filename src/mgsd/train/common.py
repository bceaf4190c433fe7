"""What every training loop shares: setup, optimizer and schedule, data order, checkpoints, logs.

Small functions, no trainer class. `mgsd.train.sft.train` is the reference loop: `setup`,
`make_optimizer`, `make_schedule`, `acc.prepare`, `lock_work_dir`, `resume_checkpoint` /
`load_checkpoint`, then per step the batch of `batch_indices` (a function of seed and step)
split by `shard`, one `Updater.step`, a `JsonlLogger` line and `checkpoint_if_due` (which
saves on a `StopSignal` and exits for resume). `tests/integration/test_resume_ddp.py` runs a
complete toy loop.

Steps count completed optimizer steps: `step-000120/` holds the state after 120 steps.
Runs unchanged under `accelerate launch --num_processes N` (DDP; gloo on CPU, where the launch
needs `--multi_gpu` since `--cpu` alone starts one process). The work folder must be shared by
all processes (one node).

Exit code 75 (EX_TEMPFAIL in sysexits.h, "try again later"): the run was stopped by SIGTERM or
SIGUSR1 (what Slurm sends before a time limit or preemption) after saving a checkpoint;
rerunning the same command resumes it. Under `accelerate launch` the launcher (torchrun)
forwards SIGTERM but exits 1 itself, dies on SIGUSR1 unless the environment has
`PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1`, and kills workers 30 s after
forwarding unless `PET_SHUTDOWN_TIMEOUT` gives a checkpoint more time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import sys
import time
import typing
import warnings
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from mgsd import config
from mgsd.data.records import RecordError
from mgsd.io import atomic_copy, atomic_write_text, write_atomic_json
from mgsd.model.load import ModelLoadError
from mgsd.model.lora import unwrap

EXIT_RESUMABLE = 75
Model = torch.nn.Module
Optimizer = torch.optim.Optimizer
Scheduler = torch.optim.lr_scheduler.LRScheduler
_CKPT_RE = re.compile(r"^step-(\d{6,})$")


class CheckpointError(RuntimeError):
    """A checkpoint folder is incomplete, corrupt or does not fit the model."""


# bad input a stage reports in one line (exit 1) instead of a traceback
INPUT_ERRORS = (
    config.ConfigError, RecordError, ModelLoadError, CheckpointError, FileNotFoundError,
)  # fmt: skip


def compile_layers(model: torch.nn.Module) -> int:
    """torch.compile every decoder layer and vision block in place; returns how many.

    The identical layers share one compiled graph per kind (their forwards run without a KV
    cache: training forwards pass ``use_cache=False``). Generation runs its prefill eagerly
    (`mgsd.model.decode`), so a compiled model still decodes with the static engine.
    """
    inner = unwrap(model)
    layers = [*inner.model.language_model.layers, *inner.model.visual.blocks]
    for layer in layers:
        layer.compile()
    return len(layers)


def setup(cfg_seed: int, mixed_precision: str = "auto") -> Accelerator:
    """An Accelerator (bf16 on CUDA, fp32 on CPU; "auto" picks) with every RNG seeded.

    All processes get the same seed, so the initial weights agree; data differs by `shard`.
    """
    cuda = torch.cuda.is_available()
    if mixed_precision == "auto":
        mixed_precision = "bf16" if cuda else "no"
    # cpu=True is what makes accelerate pick gloo (MULTI_CPU) when launched with N processes.
    acc = Accelerator(mixed_precision=mixed_precision, cpu=not cuda)
    set_seed(cfg_seed)
    return acc


def make_optimizer(
    params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float
) -> Optimizer:
    """AdamW; matrices (ndim >= 2) decay, biases and norm weights (ndim < 2) do not."""
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("make_optimizer: no parameter requires grad")
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def make_schedule(
    optimizer: Optimizer, steps: int, warmup_ratio: float, kind: str = "cosine"
) -> Scheduler:
    """Linear warmup over round(steps x warmup_ratio) steps, then cosine to 0 or constant.

    Call `scheduler.step()` once per optimizer step. Warmup step s uses (s + 1) / (warmup + 1)
    of the peak, so no step is wasted at lr 0.
    """
    if kind not in ("cosine", "constant"):
        raise ValueError(f"schedule: {kind!r} is not one of 'cosine', 'constant'")
    warmup = round(steps * warmup_ratio)

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@lru_cache(maxsize=4)
def _epoch_order(n_examples: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_examples)


def batch_indices(n_examples: int, global_batch: int, seed: int, step: int) -> list[int]:
    """Example indices of optimizer step `step` (0-based): a pure function of (seed, step).

    The data is read as one permutation per epoch (seeded by (seed, epoch)) laid end to end,
    so every example is seen once per epoch and a batch may straddle two epochs.
    """
    if n_examples < 1 or global_batch < 1 or step < 0:
        raise ValueError(
            f"batch_indices: bad sizes n={n_examples} batch={global_batch} step={step}"
        )
    start = step * global_batch
    out = []
    for pos in range(start, start + global_batch):
        epoch, i = divmod(pos, n_examples)
        out.append(int(_epoch_order(n_examples, seed, epoch)[i]))
    return out


def shard(indices: list[int], rank: int, world: int) -> list[int]:
    """This process's contiguous slice of a global batch (also usable for micro-batches)."""
    if len(indices) % world:
        raise ValueError(
            f"global batch {len(indices)} is not divisible by {world} processes: "
            "set batch_size to a multiple of the number of processes x grad_accum"
        )
    k = len(indices) // world
    return indices[rank * k : (rank + 1) * k]


class _StepBatches(torch.utils.data.Dataset):
    def __init__(self, make: typing.Callable[[int], Any], steps: range):
        self.make, self.steps = make, steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> Any:
        return self.make(self.steps[i])


def prefetched(make: typing.Callable[[int], Any], steps: range, workers: int) -> Iterable[Any]:
    """`make(step)` for every step, in order; with `workers` > 0 built ahead in that many
    worker processes, so that building a batch on the host (prompts, tokenizer, picture
    preprocessing) overlaps the accelerator's work on the previous one. Batches are a pure
    function of the step, so the result is the same for any number of workers."""
    if workers == 0:
        return (make(s) for s in steps)
    # forked workers must not start tokenizer threads of their own (the library warns)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # fork: the workers inherit `make` (a closure over the loaded data and processor) as is
    return torch.utils.data.DataLoader(
        _StepBatches(make, steps),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2,
        multiprocessing_context="fork",
    )


# ---------------------------------------------------------------- the update


MAX_NONFINITE_IN_A_ROW = 10  # then the run stops: its updates are not coming back


class NonFiniteUpdates(RuntimeError):
    """The gradient was not finite for `MAX_NONFINITE_IN_A_ROW` optimizer steps in a row."""


class Updater:
    """Clip the gradient and take the optimizer step, unless the gradient is not finite.

    One batch whose gradient overflows (seen with bf16 autocast on a GPU: a finite loss, a NaN
    gradient norm) would otherwise turn every weight into NaN through the clip, which scales
    all gradients by max_norm / NaN. Such a step is skipped instead (the scheduler still steps,
    so the schedule stays a function of the step) and counted in `skipped`, which the loops log
    as `train/skipped_steps`; `MAX_NONFINITE_IN_A_ROW` skips in a row raise `NonFiniteUpdates`
    naming the stage. Under DDP every process sees the same reduced norm, so all skip together.
    """

    def __init__(self, acc, optimizer, scheduler, params, grad_clip: float, stage: str):
        self.acc, self.opt, self.sched, self.params = acc, optimizer, scheduler, list(params)
        self.grad_clip, self.stage = grad_clip, stage
        self.skipped, self.in_a_row = 0, 0

    def step(self) -> float:
        """The step's gradient norm (before clipping); the update happens only if it is finite."""
        norm = float(self.acc.clip_grad_norm_(self.params, self.grad_clip or float("inf")))
        if math.isfinite(norm):
            self.opt.step()
            self.in_a_row = 0
        else:
            self.skipped += 1
            self.in_a_row += 1
            print(f"{self.stage}: gradient norm {norm}: update skipped", file=sys.stderr)
            if self.in_a_row >= MAX_NONFINITE_IN_A_ROW:
                raise NonFiniteUpdates(
                    f"{self.stage}: the gradient was not finite for {self.in_a_row} steps in a "
                    f"row ({self.skipped} in all); lower {self.stage}.lr or check the data"
                )
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return norm


class WorkDirBusy(RuntimeError):
    """Another live run holds the work folder (two writers would corrupt its checkpoints)."""


def lock_work_dir(work_dir: str | Path, accelerator) -> Any:
    """Hold `work_dir/.lock` for the life of this process (main process only): a second run on
    the same folder fails at once with `WorkDirBusy`, naming the holder's pid. The lock goes
    with the process, however it ends (an flock of an open file)."""
    if not accelerator.is_main_process:
        return None
    import fcntl

    path = Path(work_dir) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise WorkDirBusy(
            f"{work_dir} is in use by another run (pid {holder}): wait for it to end or stop it"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def publish_log(live: str | Path, final: str | Path | None) -> None:
    """Copy the live training log to the declared output `final` (atomically), if given."""
    if final is None:
        return
    atomic_copy(live, final)


# what a stage CLI reports in one line (exit 1) instead of a traceback
STOP_ERRORS = (*INPUT_ERRORS, NonFiniteUpdates, WorkDirBusy)


# ---------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _complete(path: Path) -> bool:
    return path.is_dir() and bool(_CKPT_RE.match(path.name)) and (path / "meta.json").is_file()


def checkpoints(work_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `work_dir`, oldest first (tmp and half-written ones ignored)."""
    work_dir = Path(work_dir)
    found = [p for p in work_dir.glob("step-*") if _complete(p)] if work_dir.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def run_fingerprint(*parts: str, files: Iterable[str | Path] = ()) -> str:
    """A hash of what a run depends on: its arguments, and the size and time of its input files.

    Saved with every checkpoint; a checkpoint of another configuration or of other inputs
    (Snakemake reruns a job after a config or data change) is never resumed.
    """
    h = hashlib.sha1()
    for part in parts:
        h.update(part.encode() + b"\0")
    for f in files:
        path = Path(f)
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for m in members:
            st = m.stat() if m.exists() else None  # a hub id is no file: its name is the input
            h.update((f"{m}:{st.st_size}:{st.st_mtime_ns}" if st else str(m)).encode() + b"\0")
    return h.hexdigest()


def resume_checkpoint(work_dir: str | Path, fingerprint: str, accelerator) -> Path | None:
    """The latest checkpoint of this very run, or None; stale ones of another run are removed."""
    ckpt = latest_checkpoint(work_dir)
    if ckpt is None:
        return None
    if checkpoint_meta(ckpt).get("extra", {}).get("fingerprint") == fingerprint:
        return ckpt
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        print(
            f"ignoring the checkpoints in {work_dir}: they belong to another configuration or "
            "other inputs; starting from step 0",
            file=sys.stderr,
        )
        for old in checkpoints(work_dir):
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return None


def remove_checkpoints(work_dir: str | Path) -> int:
    """Delete the resumable checkpoints of a finished run (its live log stays); how many."""
    found = checkpoints(work_dir)
    for old in found:
        shutil.rmtree(old)
    for stale in Path(work_dir).glob(".tmp-step-*"):
        shutil.rmtree(stale)
    return len(found)


def latest_checkpoint(work_dir: str | Path) -> Path | None:
    found = checkpoints(work_dir)
    return found[-1] if found else None


def save_checkpoint(
    work_dir: str | Path, step: int, model: Model, optimizer: Optimizer, scheduler: Scheduler,
    accelerator: Accelerator, extra: dict | None = None, keep: int = 2,
) -> Path:  # fmt: skip
    """Write `work_dir/step-XXXXXX/` atomically and keep the newest `keep`. Call on all ranks.

    Holds the trainable parameters only (frozen ones come from the base model the loop
    rebuilds), the optimizer and scheduler, `meta.json` (step, world size, `extra`: JSON-able)
    and one RNG file per process. Rank 0 writes a `.tmp-` folder and renames it last; a folder
    without `meta.json` is never taken for a checkpoint.
    """
    work_dir, acc = Path(work_dir), accelerator
    final, tmp = work_dir / f"step-{step:06d}", work_dir / f".tmp-step-{step:06d}"
    if acc.is_main_process:
        for stale in work_dir.glob(".tmp-step-*"):
            shutil.rmtree(stale)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng-{acc.process_index}.pt")
    if acc.is_main_process:
        named = acc.unwrap_model(model).named_parameters()
        weights = {n: p.detach().cpu() for n, p in named if p.requires_grad}
        torch.save(weights, tmp / "model.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        meta = {"step": step, "world_size": acc.num_processes, "extra": extra or {}}
        write_atomic_json(tmp / "meta.json", meta)
    acc.wait_for_everyone()  # every rank's RNG file is in before the rename
    if acc.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoints(work_dir)[:-keep]:
            shutil.rmtree(old)
    acc.wait_for_everyone()
    return final


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, garbage or missing: say which file
        raise CheckpointError(f"corrupt or unreadable checkpoint file {path}: {e}") from e


def checkpoint_meta(ckpt_dir: str | Path) -> dict:
    """`meta.json` of a checkpoint: {"step", "world_size", "extra"}."""
    path = Path(ckpt_dir) / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"corrupt or unreadable checkpoint file {path}: {e}") from e


def load_checkpoint(
    ckpt_dir: str | Path, model: Model, optimizer: Optimizer, scheduler: Scheduler,
    accelerator: Accelerator,
) -> int:  # fmt: skip
    """Restore what `save_checkpoint` wrote (on every rank) and return its step."""
    ckpt_dir, acc = Path(ckpt_dir), accelerator
    meta = checkpoint_meta(ckpt_dir)
    weights = _load(ckpt_dir / "model.pt")
    target = acc.unwrap_model(model)
    wanted = {n for n, p in target.named_parameters() if p.requires_grad}
    if set(weights) != wanted:
        diff = sorted(set(weights) ^ wanted)[:5]
        raise CheckpointError(f"{ckpt_dir / 'model.pt'} does not fit the model: {diff} differ")
    target.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(_load(ckpt_dir / "optimizer.pt"))
    scheduler.load_state_dict(_load(ckpt_dir / "scheduler.pt"))
    rng = ckpt_dir / f"rng-{acc.process_index}.pt"
    if rng.is_file():
        _set_rng_state(_load(rng))
    else:  # a different number of processes than when saved: data order is still exact
        warnings.warn(
            f"{rng} missing (saved with {meta['world_size']} processes): RNG not restored",
            stacklevel=2,
        )
    return int(meta["step"])


# ---------------------------------------------------------------- stopping and logging


class StopSignal:
    """Records SIGTERM / SIGUSR1 (Slurm's warnings before a time limit) instead of dying.

    The loop checks `requested(acc)` every step, saves a checkpoint and calls `exit_for_resume`.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)):
        self.received: int | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in signals}

    def restore(self) -> None:
        """Put back the handlers that were there before."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def requested(self, accelerator: Accelerator | None = None) -> bool:
        """True if any process got a signal: all ranks must stop at the same step."""
        flag = float(self.received is not None)
        if accelerator is not None and accelerator.num_processes > 1:
            t = torch.tensor([flag], device=accelerator.device)
            flag = accelerator.reduce(t, reduction="sum").item()
        return flag > 0


def checkpoint_if_due(
    stop: StopSignal,
    acc,
    done: int,
    total: int,
    every: int,
    work_dir,
    model,
    opt,
    sched,
    fingerprint: str,
) -> None:
    """After step `done`: checkpoint every `every` steps (not after the last: the model is saved
    then), and on a stop signal, after which the run exits 75 to be resumed. Call on all ranks."""
    stopping = stop.requested(acc)
    if stopping or (every and done % every == 0 and done < total):
        save_checkpoint(work_dir, done, model, opt, sched, acc, extra={"fingerprint": fingerprint})
        if stopping:
            exit_for_resume(done)


def exit_for_resume(step: int) -> typing.NoReturn:
    """Log why and exit with EXIT_RESUMABLE (75); call after saving the checkpoint."""
    msg = f"stopped by signal after step {step}; checkpoint saved; exiting with code"
    print(f"{msg} {EXIT_RESUMABLE} (EX_TEMPFAIL): rerun to resume", file=sys.stderr, flush=True)
    sys.exit(EXIT_RESUMABLE)


class JsonlLogger:
    """Appends `{"step": s, "time": t, **metrics}` lines (flat keys like `train/loss`; `time` in
    seconds since the epoch); rank 0 only. Given the stage's config `cfg`, lines also carry
    `total_steps` (what `mgsd progress` reads) and the trackers of `cfg.log_with` get the same
    metrics (`start_trackers`), under the run name `name`.

    On opening, lines with step > `resume_step` are dropped (a fresh run, resume_step 0, starts
    an empty log), so a resumed run never duplicates a step. Each line is flushed.
    """

    def __init__(
        self, path: str | Path, resume_step: int = 0, enabled: bool | None = None,
        cfg: Any = None, name: str = "",
    ):  # fmt: skip
        self.path = Path(path)
        self.enabled = PartialState().is_main_process if enabled is None else enabled
        self._total = {"total_steps": cfg.steps} if hasattr(cfg, "steps") else {}
        self.trackers: list = []
        if not self.enabled:
            return
        kept = []
        if self.path.is_file() and resume_step > 0:
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(ValueError):  # a line cut by a kill is dropped
                    if json.loads(line).get("step", math.inf) <= resume_step:
                        kept.append(line + "\n")
        atomic_write_text(self.path, "".join(kept))
        self._file = self.path.open("a")
        if getattr(cfg, "log_with", ()):
            folder = self.path.parent / "tracking"
            self.trackers = start_trackers(cfg.log_with, folder, name, cfg)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if self.enabled:
            values = {k: _plain(v) for k, v in metrics.items()}
            row = {"step": step, **self._total, "time": round(time.time(), 3), **values}
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
            numbers = {k: v for k, v in values.items() if _is_number(v)}
            for tracker in self.trackers:
                tracker.log(numbers, step=step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            for tracker in self.trackers:
                tracker.finish()


# what a missing tracker's user installs (the import name, where it differs from the package)
_TRACKER_PACKAGE = {"tensorboard": "'mgsd[track]'", "comet_ml": "comet-ml"}


def start_trackers(names: Iterable[str], folder: Path, name: str, cfg: Any) -> list:
    """accelerate's trackers `names`, started (as `Accelerator.init_trackers` does) with the
    flat config `cfg` stored. Trackers that keep files (tensorboard, aim) write them under
    `folder/<name>/`; the others log to the project "mgsd" with their own settings (e.g.
    WANDB_MODE=offline). TensorBoard shows a resumed run's redone steps once (it drops the
    events of steps logged again). A tracker whose package is missing is a ConfigError."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    section = "distill" if isinstance(cfg, config.DistillConfig) else name  # its config key
    trackers = []
    for tracker_name in names:
        if tracker_name not in available:
            package = _TRACKER_PACKAGE.get(tracker_name, tracker_name)
            raise config.ConfigError(
                f"{section}.log_with: {tracker_name} is not installed (pip install {package})"
            )
        cls = LOGGER_TYPE_TO_CLASS[tracker_name]
        tracker = cls(name or "mgsd", folder) if cls.requires_logging_directory else cls("mgsd")
        tracker.start()
        tracker.store_init_configuration({"stage": name, **_flat(config.to_dict(cfg))})
        trackers.append(tracker)
    return trackers


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config values as flat keys (lora/rank) of numbers, booleans or text, as trackers
    store hyper-parameters."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}/"))
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[key] = v if v is not None else "none"
        else:
            out[key] = json.dumps(v)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor | np.generic):
        return v.item()
    return v


def progress(total: int, initial: int = 0, desc: str = "", enabled: bool | None = None) -> tqdm:
    """A tqdm bar on rank 0; in log files (no TTY) it updates at most every 30 s."""
    enabled = PartialState().is_main_process if enabled is None else enabled
    tty = sys.stderr.isatty()
    return tqdm(
        total=total, initial=initial, desc=desc, disable=not enabled,
        mininterval=1.0 if tty else 30.0, dynamic_ncols=tty, file=sys.stderr,
    )  # fmt: skip


class Meter:
    """Tokens per second since the last `stats()` call, and peak memory."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.tokens, self.t0 = 0, time.perf_counter()

    def update(self, tokens: int | float) -> None:
        self.tokens += int(tokens)

    def stats(self, prefix: str = "perf") -> dict[str, float]:
        now = time.perf_counter()
        rate = self.tokens / max(now - self.t0, 1e-9)
        self.tokens, self.t0 = 0, now
        if self.device.type == "cuda":
            peak_gb = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:  # ru_maxrss is in KiB on Linux, bytes on macOS
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_gb = rss / (2**30 if sys.platform == "darwin" else 2**20)
        return {f"{prefix}/tokens_per_s": rate, f"{prefix}/peak_mem_gb": peak_gb}


_OOM_ADVICE = {  # config key -> what to do with it, for the keys a stage's section has
    "batch_size": "lower {k}",
    "grad_accum": "raise {k} (same effective batch, smaller micro-batches)",
    "max_new_tokens": "lower {k}",
    "val_max_new_tokens": "lower {k}",
    "teacher_offload": "set {k}: true",
}


@contextlib.contextmanager
def explain_oom(stage: str) -> Iterator[None]:
    """Re-raise a CUDA out-of-memory error with the config keys of `stage` that would help."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        section = typing.get_type_hints(config.Config).get(stage)
        names = {f.name for f in dataclasses.fields(section)} if section else {"batch_size"}
        advice = [a.format(k=f"{stage}.{k}") for k, a in _OOM_ADVICE.items() if k in names]
        raise torch.OutOfMemoryError(
            f"out of GPU memory in stage {stage}: " + "; ".join(advice) + f". ({e})"
        ) from e
