"""The whole smoke pipeline on the CI Slurm cluster, as a user runs it: `snakemake --profile slurm`.

`snakemake --profile slurm all` from the repository root, on the one-node cluster of
`.ci/slurm_cluster.sh start`, with presets/slurm_ci.yaml over the smoke preset (every GPU stage
asks Slurm for one GPU) and the CI overrides for a cluster without accounting. While it runs,
the symbolic pretraining job is sent SIGTERM as on preemption (`scancel --signal=TERM`, see
slurm/README.md): it must save a checkpoint, be resubmitted by the profile's `retries` with
attempt-scaled resources, and resume. Afterwards every output of `rule all` exists, every
planned job went through Slurm, GPU jobs were granted a GPU (Slurm's record of the job, and
CUDA_VISIBLE_DEVICES in the job's log) and CPU jobs none, and the resumed training log is whole.

    .ci/slurm_cluster.sh start && python -m pytest -m slurm tests/workflow -q -x

Without a cluster the test skips, except in CI (`CI=true` or `MGSD_REQUIRE_SLURM=1`, which
.ci/run sets after starting the cluster), where a missing cluster is a failure.
"""

import collections
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mgsd.config import Config, load_file, resources
from mgsd.workflow import eval_files, eval_model, report_files, trained_models

REPO = Path(__file__).resolve().parents[2]
PRESETS = ("presets/smoke.yaml", "presets/slurm_ci.yaml")  # relative: the user's command line
# the CI overrides for a cluster without accounting (slurm/README.md)
CI_OVERRIDES = [
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks",
    "2",
]
COMMAND = [sys.executable, "-m", "snakemake", "--profile", "slurm", "all", "--configfile"]
COMMAND += [*PRESETS, *CI_OVERRIDES, "--workflow-profile", "none"]
USER_VARIABLES = ("MGSD_SLURM_PARTITION", "MGSD_SLURM_ACCOUNT")
GPU_RULES = frozenset(
    {"symbolic_pretrain", "grounding", "sft_direct", "grounding_sft", "distill", "rl", "evaluate",
     "premise_eval", "evaluate_external"}
)  # fmt: skip
# the config section whose resources a rule asks
STAGE_OF_RULE = {"premise_eval": "evaluate", "evaluate_external": "evaluate"}
CANCELLED_RULE = "symbolic_pretrain"  # its model is "base", its resume folder resume/base
# generous: the data and scratch jobs run first, on a 2-core CI machine shared with other jobs
START_TIMEOUT_S = 900
RUN_TIMEOUT_S = 2400
POLL_S = 0.5
RESUME_RE = re.compile(rf"resuming {CANCELLED_RULE} from (\S+) \(step (\d+) of (\d+)\)")
LOADING_RE = re.compile(r"loading (\S+) on (\S+) as \S+ \(CUDA_VISIBLE_DEVICES=([^)]*)\)")
COMMENT_RE = re.compile(r"^rule_(.+?)(?:_wildcards_(.*))?$")  # the plugin's --comment


def _env() -> dict:
    """The environment without the user's partition and account: the cluster's defaults."""
    env = {k: v for k, v in os.environ.items() if k not in USER_VARIABLES}
    return env | {"PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}


def _config() -> Config:
    """The config the workflow sees: the Snakefile's default, then the presets over it."""
    return load_file(REPO / "pipeline_config.yaml", *(REPO / p for p in PRESETS))


def _planned_jobs(workdir: Path) -> collections.Counter:
    """Jobs per rule from a dry run of the same command (the local `all` left out)."""
    result = subprocess.run(
        COMMAND + ["--directory", str(workdir), "--dry-run"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Job stats:" in output, output[-4000:]
    assert "Using profile slurm" in output, output[-4000:]
    planned = collections.Counter()
    for line in output[output.index("Job stats:") :].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        planned[parts[0]] = int(parts[1])
    del planned["all"]
    return planned


def _slurm_jobs(workdir: Path) -> dict[str, dict[str, str]]:
    """Slurm's record of each job run in `workdir`, by job id (finished jobs stay MinJobAge s)."""
    result = subprocess.run(
        ["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=60
    )
    jobs = {}
    for line in result.stdout.splitlines():
        fields = dict(token.split("=", 1) for token in line.split() if "=" in token)
        if "JobId" in fields and os.path.realpath(fields.get("WorkDir", "")) == str(workdir):
            jobs[fields["JobId"]] = fields
    return jobs


def _rule(job: dict[str, str]) -> str:
    match = COMMENT_RE.match(job.get("Comment", ""))
    return match.group(1) if match else f"<no rule: Comment={job.get('Comment')!r}>"


def _stage(rule: str) -> str:
    return STAGE_OF_RULE.get(rule, rule)


def _gpus(job: dict[str, str]) -> int:
    """GPUs asked of Slurm: `--gpus=N` is TresPerJob gres:gpu:N (gres/gpu:N in newer Slurm)."""
    tres = ",".join(job.get(k, "") for k in ("TresPerJob", "TresPerNode", "TresPerTask"))
    return sum(int(n) for n in re.findall(r"gres[:/]gpu(?::[^,:=]+)?[:=](\d+)", tres))


def _mem_mb(job: dict[str, str]) -> int:
    match = re.fullmatch(r"(\d+)([MGT])", job.get("MinMemoryNode", ""))
    assert match, f"job {job.get('JobId')}: no MinMemoryNode in {job}"
    return int(match.group(1)) * {"M": 1, "G": 1024, "T": 1024**2}[match.group(2)]


def _tail(path: Path, chars: int) -> str:
    return f"----- {path} -----\n{path.read_text(errors='replace')[-chars:]}\n"


def _diagnostics(workdir: Path, log_path: Path, jobs: dict[str, dict[str, str]]) -> str:
    """The snakemake output, the Slurm jobs and the tails of every job log, for a failure."""
    states = "\n".join(
        f"  {i} {_rule(j)} {j.get('JobState')} exit={j.get('ExitCode')} gpus={_gpus(j)}"
        for i, j in sorted(jobs.items(), key=lambda kv: int(kv[0]))
    )
    text = _tail(log_path, 6000) + f"----- Slurm jobs -----\n{states}\n"
    for path in sorted(workdir.glob("results/*/logs/**/*.log")):
        text += _tail(path, 1200)
    for path in sorted(workdir.glob(".snakemake/slurm_logs/**/*.log")):  # failed jobs only
        text += _tail(path, 1200)
    return text


def _signal_training(proc, workdir: Path, ckpt_dir: Path, jobs: dict) -> str:
    """Once the training job runs and has a checkpoint, send it SIGTERM; return its job id."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        jobs.update(_slurm_jobs(workdir))
        running = [
            i
            for i, j in jobs.items()
            if _rule(j) == CANCELLED_RULE and j.get("JobState") == "RUNNING"
        ]
        if running and any(ckpt_dir.glob("step-*")):
            # the plain form: every process of the job's steps gets it (slurm/README.md)
            subprocess.run(["scancel", "--signal=TERM", running[0]], check=True, timeout=60)
            return running[0]
        time.sleep(POLL_S)
    return ""


def _wait(proc, workdir: Path, jobs: dict, timeout_s: float) -> int | None:
    """Wait for snakemake, recording Slurm's jobs meanwhile (they leave squeue after a while)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        jobs.update(_slurm_jobs(workdir))
        time.sleep(5 * POLL_S)
    return proc.poll()


def _cancel_leftovers(jobs: dict) -> None:
    """After a failure: no job of this test stays on the cluster."""
    active = [i for i, j in jobs.items() if j.get("JobState") in ("PENDING", "RUNNING")]
    if active:
        subprocess.run(["scancel", *active], timeout=60)


@pytest.mark.slow
@pytest.mark.slurm
def test_smoke_pipeline_on_slurm_resumes_cancelled_training(slurm_cluster, tmp_path, capsys):
    workdir = Path(os.path.realpath(tmp_path))
    cfg = _config()
    planned = _planned_jobs(workdir)
    ckpt_dir = workdir / cfg.root / "resume" / "base"
    log_path = workdir / "snakemake.log"
    jobs: dict[str, dict[str, str]] = {}
    t0 = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            COMMAND + ["--directory", str(workdir)],
            cwd=REPO,
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            signalled = _signal_training(proc, workdir, ckpt_dir, jobs)
            returncode = _wait(proc, workdir, jobs, RUN_TIMEOUT_S) if signalled else None
        finally:
            if proc.poll() is None:
                proc.terminate()  # the executor cancels its jobs on SIGTERM
                proc.wait(timeout=120)
            jobs.update(_slurm_jobs(workdir))
            _cancel_leftovers(jobs)
    wall_s = time.monotonic() - t0
    report = _diagnostics(workdir, log_path, jobs)
    assert signalled, f"no running {CANCELLED_RULE} job with a checkpoint in {ckpt_dir}\n{report}"
    assert returncode == 0, f"snakemake --profile slurm failed (rc {returncode})\n{report}"

    missing = [f for f in report_files(cfg) + eval_files(cfg) if not (workdir / f).is_file()]
    assert not missing, f"outputs of rule all missing: {missing}\n{report}"

    # every planned job went through Slurm; only the signalled one twice
    submitted = collections.Counter(_rule(j) for j in jobs.values())
    extra = submitted - planned
    assert submitted - extra == planned, f"planned {planned}, Slurm ran {submitted}\n{report}"
    assert extra == {CANCELLED_RULE: 1}, f"resubmissions {dict(extra)}\n{report}"

    # the first attempt failed (exit 75 after its checkpoint); the second asked for twice the
    # memory (resources scale with `attempt`) and resumed mid-way from a checkpoint
    first, second = sorted((i for i, j in jobs.items() if _rule(j) == CANCELLED_RULE), key=int)
    assert first == signalled, report
    assert jobs[first]["JobState"] == "FAILED", f"job {first}: {jobs[first]['JobState']}\n{report}"
    assert jobs[second]["JobState"] == "COMPLETED", report
    assert _mem_mb(jobs[second]) == 2 * _mem_mb(jobs[first]), report
    train_log = (workdir / cfg.root / "logs" / "models" / "base.log").read_text()
    resumed = RESUME_RE.search(train_log)
    assert resumed, f"attempt 2 of {CANCELLED_RULE} did not resume\n{report}"
    ckpt, step, steps = resumed.group(1), int(resumed.group(2)), int(resumed.group(3))
    assert Path(ckpt).parent == Path(cfg.root) / "resume" / "base", ckpt
    assert cfg.symbolic_pretrain.checkpoint_every <= step < steps == cfg.symbolic_pretrain.steps
    # the training log is whole: Snakemake deleted the failed attempt's outputs, not its steps
    log_rows = (workdir / cfg.root / "models" / "base" / "train_log.jsonl").read_text()
    logged = {json.loads(row)["step"] for row in log_rows.splitlines()}
    every = cfg.symbolic_pretrain.log_every
    lost = sorted(set(range(every, steps + 1, every)) - logged)
    assert not lost, f"models/base/train_log.jsonl lacks steps {lost[:3]}...{lost[-3:]}"

    # GPU stages were granted what resources.<stage>.gpus asks, CPU jobs no GPU
    wrong = {
        i: (_rule(j), _gpus(j))
        for i, j in jobs.items()
        if _gpus(j) != (resources(cfg, _stage(_rule(j))).gpus if _rule(j) in GPU_RULES else 0)
    }
    assert not wrong, f"jobs asking the wrong number of GPUs (id: rule, gpus): {wrong}\n{report}"
    assert all(resources(cfg, _stage(rule)).gpus >= 1 for rule in GPU_RULES), cfg.resources

    # ...and saw them: Slurm set CUDA_VISIBLE_DEVICES for every model the GPU jobs loaded (the
    # CI GPUs are fake devices, so the code falls back to the CPU there)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu_logs = [f"logs/models/{m}.log" for m in trained_models(cfg)]
    gpu_logs += [f"logs/eval/{m}.log" for m in dict.fromkeys(map(eval_model, cfg.methods))]
    gpu_logs.append("logs/eval/premise.log")
    for name in gpu_logs:
        loads = LOADING_RE.findall((workdir / cfg.root / name).read_text())
        assert loads, f"{name}: no 'loading ...' line\n{report}"
        for model, on, visible in loads:
            assert visible and on.startswith(device), f"{name}: {model} on {on}, CVD={visible!r}"

    with capsys.disabled():
        print(
            f"\nslurm pipeline: {len(jobs)} Slurm jobs, {sum(extra.values())} resubmission(s)"
            f" ({CANCELLED_RULE} resumed at step {step} of {steps}), wall time {wall_s:.0f} s"
        )
