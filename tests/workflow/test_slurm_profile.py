"""Tests of the Slurm profile (slurm/profile.yaml) and of the CI cluster script.

The fast tests read the profile the way Snakemake reads it. The `slurm` test runs the toy
workflow in tests/workflow/slurm_toy/ on the one-node cluster of `.ci/slurm_cluster.sh start`,
with the same command line a user types (`snakemake --profile slurm` from the repository root)
plus the CI overrides for a cluster without accounting. It cancels one job with SIGTERM, as
preemption or the time limit would, and checks that the profile's `retries` resubmits it.
Without a cluster it skips, except in CI (`CI=true` or `MGSD_REQUIRE_SLURM=1`, set by .ci/run),
where that is a failure. test_slurm_pipeline.py runs the whole smoke pipeline the same way.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from snakemake.profiles import ProfileConfigFileParser

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "slurm" / "profile.yaml"
CLUSTER_SCRIPT = REPO / ".ci" / "slurm_cluster.sh"
TOY_SNAKEFILE = Path(__file__).resolve().parent / "slurm_toy" / "Snakefile"
USER_VARIABLES = ("MGSD_SLURM_PARTITION", "MGSD_SLURM_ACCOUNT")
# what CI adds for the local cluster: no sacct without an accounting database, no account
CI_OVERRIDES = [
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks",
    "2",
]


def _parse_profile() -> dict:
    with PROFILE.open() as stream:
        return dict(ProfileConfigFileParser().parse(stream))


def _env_without_user_variables() -> dict:
    return {k: v for k, v in os.environ.items() if k not in USER_VARIABLES}


def test_profile_has_executor_retries_and_resilience_settings(monkeypatch):
    for name in USER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    profile = _parse_profile()
    assert profile["executor"] == "slurm"
    assert int(profile["jobs"]) >= 1
    assert int(profile["retries"]) >= 1
    assert profile["rerun-incomplete"] == "True"
    assert int(profile["latency-wait"]) >= 5
    resources = dict(item.split("=", 1) for item in profile["default-resources"])
    # unset variables give empty strings: the plugin then uses the default partition
    assert resources["slurm_partition"] == "''"
    assert resources["slurm_account"] == "''"
    assert int(resources["mem_mb"]) > 0 and int(resources["runtime"]) > 0
    # cpus_per_task would take precedence over the GPU rules' cpus_per_gpu
    assert "cpus_per_task" not in resources


def test_profile_reads_partition_and_account_from_environment(monkeypatch):
    monkeypatch.setenv("MGSD_SLURM_PARTITION", "gpu-h200")
    monkeypatch.setenv("MGSD_SLURM_ACCOUNT", "123456")
    resources = dict(item.split("=", 1) for item in _parse_profile()["default-resources"])
    # quoted, so that Snakemake's expression evaluation keeps them strings
    assert resources["slurm_partition"] == "'gpu-h200'"
    assert resources["slurm_account"] == "'123456'"


def test_dry_run_from_repository_root_uses_profile_resources(tmp_path):
    env = _env_without_user_variables() | {"MGSD_SLURM_PARTITION": "gpu-h200"}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "slurm", "--workflow-profile", "none"]
        + ["-s", str(TOY_SNAKEFILE), "--directory", str(tmp_path), "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Using profile slurm" in output
    assert "slurm_partition=gpu-h200" in output
    # the GPU rule keeps its own resources next to the profile's defaults
    assert "gpu=1, cpus_per_gpu=1" in output


def test_cluster_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(CLUSTER_SCRIPT)]).returncode == 0
    usage = subprocess.run(["bash", str(CLUSTER_SCRIPT)], capture_output=True, text=True)
    assert usage.returncode == 2 and "start|stop|status" in usage.stderr


def _wait_for_file(path: Path, proc: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.5)
    return ""


@pytest.mark.slow
@pytest.mark.slurm
def test_toy_workflow_on_slurm_survives_sigterm(slurm_cluster, tmp_path):
    log_path = tmp_path / "snakemake.log"
    command = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--workflow-profile"]
    command += ["none", "-s", str(TOY_SNAKEFILE), "--directory", str(tmp_path)]
    command += CI_OVERRIDES + ["--config", "wait_for_signal=1"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command, cwd=REPO, env=_env_without_user_variables(), stdout=log, stderr=log
        )
        try:
            job_id = _wait_for_file(tmp_path / "signalled.started", proc, timeout_s=180)
            assert job_id.isdigit(), f"signal job never started:\n{log_path.read_text()[-3000:]}"
            # default scancel --signal reaches every process of the job steps: the job's
            # snakemake (which waits for its shell on TERM) and the rule's shell
            subprocess.run(["scancel", "--signal=TERM", job_id], check=True, timeout=30)
            returncode = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
    output = log_path.read_text()
    assert returncode == 0, output[-3000:]
    assert (tmp_path / "cpu.txt").read_text().startswith("job=")
    gpu_line = (tmp_path / "gpu.txt").read_text().split()
    assert gpu_line[0] != "cuda=", "Slurm did not set CUDA_VISIBLE_DEVICES for gpu=1"
    assert (tmp_path / "signalled.term").read_text().startswith("SIGTERM in job")
    assert (tmp_path / "signalled.txt").read_text().startswith("attempt=2 ")
