"""The report side (metrics, tables, plots) runs without torch: importing it must not load it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_report_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import mgsd.eval.metrics, mgsd.eval.summary, mgsd.report.tables, mgsd.report.plots\n"
        "import mgsd.report.style, mgsd.report.progress\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'mgsd.model'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        },
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
