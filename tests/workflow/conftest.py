"""Fixtures of the workflow tests."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


@pytest.fixture
def slurm_cluster() -> None:
    """A reachable idle Slurm node, or a skip; a failure where CI promised a cluster (.ci/run)."""
    if shutil.which("sinfo"):
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=60
        )
        if result.returncode == 0 and any(
            s.startswith(("idle", "mix")) for s in result.stdout.split()
        ):
            return
    reason = "no reachable Slurm node (sinfo); start one with .ci/slurm_cluster.sh start"
    if os.environ.get("CI") == "true" or os.environ.get("MGSD_REQUIRE_SLURM") == "1":
        pytest.fail(f"{reason} (required here: CI=true or MGSD_REQUIRE_SLURM=1)")
    pytest.skip(reason)
