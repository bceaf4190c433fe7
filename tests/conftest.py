"""Shared fixtures: where the public benchmarks are.

The benchmarks live outside the repository, at ``<repo>/../shared/benchmarks`` unless the
environment variable MGSD_BENCHMARKS names another folder. CI has them; a checkout without
them skips the benchmark tests with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    env = os.environ.get("MGSD_BENCHMARKS")
    path = Path(env) if env else REPO.parent / "shared" / "benchmarks"
    if not path.is_dir():
        how = "$MGSD_BENCHMARKS" if env else "<repo>/../shared/benchmarks (or set MGSD_BENCHMARKS)"
        pytest.skip(f"public benchmarks not found at {path} ({how})")
    return path
