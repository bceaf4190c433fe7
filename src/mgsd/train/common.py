"""What every training loop shares: setup, optimizer and schedule, data order, updates, logs.

Small functions, no trainer class; checkpoints, resume and stop signals are in
`mgsd.train.resume`. `mgsd.train.sft.train` is the reference loop: `setup`,
`make_optimizer`, `make_schedule`, `acc.prepare`, `open_run` (lock, resume, log, stop signal,
updater), then per step the batch of `batch_indices` (a function of seed and step) split by
`shard`, one `Updater.step` and `end_step` (validation, a `JsonlLogger` line and
`checkpoint_if_due`, which saves on a `StopSignal` and exits for resume); `end_run` and
`finish` close it. `tests/integration/test_resume_ddp.py` runs a complete toy loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import resource
import sys
import time
import typing
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
from mgsd.io import atomic_copy, atomic_write_text
from mgsd.model.load import ModelLoadError, save_model
from mgsd.train.resume import (
    CheckpointError,
    Optimizer,
    Scheduler,
    StopSignal,
    WorkDirBusy,
    checkpoint_if_due,
    remove_checkpoints,
    start_run,
)

# bad input a stage reports in one line (exit 1) instead of a traceback
INPUT_ERRORS = (
    config.ConfigError, RecordError, ModelLoadError, CheckpointError, FileNotFoundError,
)  # fmt: skip


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


@dataclasses.dataclass(frozen=True)
class Run:
    """What every step's end and the run's end touch, opened by `open_run`: the prepared model,
    optimizer and scheduler, the updater, the log, the stop signal, the meter and progress bar,
    the work folder (its lock held here) and the fingerprint its checkpoints carry."""

    acc: Accelerator
    cfg: Any  # the stage's config section
    args: Any  # the stage's command line: log, final_log, work, out
    model: torch.nn.Module
    opt: Optimizer
    sched: Scheduler
    fingerprint: str
    start: int  # the first step to train (> 0 when resumed)
    lock: Any
    updater: Updater
    log: JsonlLogger
    stop: StopSignal
    meter: Meter
    bar: tqdm


def open_run(acc, cfg, args, name: str, model, opt, sched, params, fingerprint: str) -> Run:
    """Lock the work folder and resume from this run's checkpoint (`resume.start_run`), then
    open the log (from the step resumed), the stop signal, the meter, the bar and the updater."""
    start, lock = start_run(args.work, fingerprint, acc, model, opt, sched, name, cfg.steps)
    return Run(
        acc, cfg, args, model, opt, sched, fingerprint, start, lock,
        updater=Updater(acc, opt, sched, params, cfg.grad_clip, name),
        log=JsonlLogger(args.log, start, cfg=cfg, name=name),
        stop=StopSignal(),
        meter=Meter(acc.device),
        bar=progress(cfg.steps, start, name),
    )  # fmt: skip


def end_step(
    run: Run, done: int, last: dict, grad_norm: float, postfix: dict[str, str],
    validate: typing.Callable[[], dict],
) -> None:  # fmt: skip
    """After step `done` (metrics `last`, updated in place): the update's health, greedy
    validation every `eval_every` steps (main process; the end validates anyway), a log line
    every `log_every` steps and at the end, the bar, and a checkpoint when due or asked for by a
    stop signal (`resume.checkpoint_if_due`, which then exits for resume)."""
    acc, cfg = run.acc, run.cfg
    last.update({"train/grad_norm": grad_norm, "train/skipped_steps": run.updater.skipped})
    if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
        if acc.is_main_process:
            last.update(validate())
        acc.wait_for_everyone()
    if done % cfg.log_every == 0 or done == cfg.steps:
        run.log.log(done, {**last, **run.meter.stats()})
    run.bar.update()
    run.bar.set_postfix(postfix, refresh=False)
    checkpoint_if_due(
        run.stop, acc, done, cfg.steps, cfg.checkpoint_every, run.args.work, run.model, run.opt,
        run.sched, run.fingerprint,
    )  # fmt: skip


def end_run(run: Run, validate: typing.Callable[[], dict]) -> dict:
    """After the last step: the bar closed, SIGTERM given back (the loop may run inside another
    program, as in the tests), and the final greedy validation, logged (main process; {} on the
    others)."""
    run.bar.close()
    run.stop.restore()
    final = {}
    if run.acc.is_main_process:
        final = validate()
        run.log.log(run.cfg.steps, final)
    return final


def publish_log(live: str | Path, final: str | Path | None) -> None:
    """Copy the live training log to the declared output `final` (atomically), if given."""
    if final is None:
        return
    atomic_copy(live, final)


def finish(acc, model, processor, args, card: dict, cfg, log: JsonlLogger) -> None:
    """The end of a training run: the main process writes the final model with its card (and the
    stage's config) and, unless they are kept, removes the checkpoints; once every process is
    there, the log closes and the live log becomes the declared one."""
    if acc.is_main_process:
        save_model(model, processor, args.out, {**card, "config": config.to_dict(cfg)})
        if not cfg.keep_checkpoints:  # the model is written: they can only fill the disk
            remove_checkpoints(args.work)
    acc.wait_for_everyone()
    log.close()
    if acc.is_main_process:
        publish_log(args.log, args.final_log)


# what a stage CLI reports in one line (exit 1) instead of a traceback
STOP_ERRORS = (*INPUT_ERRORS, NonFiniteUpdates, WorkDirBusy)


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
    # its config key: on-policy methods share their stage's section
    section = {config.DistillConfig: "distill", config.RLConfig: "rl"}.get(type(cfg), name)
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
