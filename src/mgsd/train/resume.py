"""Checkpoints, resume and stop signals of the training loops (`mgsd.train.sft`, `distill`).

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

import hashlib
import json
import os
import random
import re
import shutil
import signal
import sys
import typing
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from mgsd.io import write_atomic_json

EXIT_RESUMABLE = 75
Model = torch.nn.Module
Optimizer = torch.optim.Optimizer
Scheduler = torch.optim.lr_scheduler.LRScheduler
_CKPT_RE = re.compile(r"^step-(\d{6,})$")


class CheckpointError(RuntimeError):
    """A checkpoint folder is incomplete, corrupt or does not fit the model."""


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


# ---------------------------------------------------------------- stopping


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


def start_run(
    work_dir: str | Path, fingerprint: str, accelerator, model, optimizer, scheduler,
    name: str, steps: int,
) -> tuple[int, Any]:  # fmt: skip
    """Lock the run's work folder and resume from the checkpoint this run wrote, if any (saying
    so on stderr). Returns the first step to train and the lock, which the caller keeps for as
    long as the run lasts."""
    lock = lock_work_dir(work_dir, accelerator)
    ckpt = resume_checkpoint(work_dir, fingerprint, accelerator)
    start = load_checkpoint(ckpt, model, optimizer, scheduler, accelerator) if ckpt else 0
    if ckpt:
        print(f"resuming {name} from {ckpt} (step {start} of {steps})", file=sys.stderr)
    return start, lock


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
