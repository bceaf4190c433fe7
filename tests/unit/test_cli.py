"""The `mgsd` command: version, every stage's help without torch, help texts as written, and a
reader that leaves early."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from mgsd import cli

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV, **kwargs
    )


def test_version_is_the_package_version(capsys):
    assert cli.main(["--version"]) == 0
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out == f"mgsd {version}\n"


HELPS = """
import contextlib, io, json, sys
from mgsd import cli
out = {}
for argv in [[s, "--help"] for s in cli.STAGES] + [["distill", "--bogus"]]:
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        try:
            cli.main(argv)
        except SystemExit as e:
            out[" ".join(argv)] = [e.code, text.getvalue()]
print(json.dumps({"helps": out, "torch": "torch" in sys.modules}))
"""


def test_every_stage_answers_help_and_usage_errors_without_torch():
    done = run_python(HELPS)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["torch"] is False
    for stage in cli.STAGES:
        code, text = got["helps"][f"{stage} --help"]
        assert code == 0 and text.startswith(f"usage: mgsd {stage} "), (stage, text[:200])
    code, text = got["helps"]["distill --bogus"]
    assert code == 2 and "the following arguments are required: --method" in text


def continued_lines(module: str) -> list[str]:
    """The lines of `module`'s docstring, as written in its source, that end with a backslash
    (the line breaks of a usage example)."""
    source = Path(importlib.util.find_spec(module).origin).read_text()
    doc = ast.get_source_segment(source, ast.parse(source).body[0])
    return [line.strip().replace("\\\\", "\\") for line in doc.splitlines() if line.endswith("\\")]


def test_usage_examples_in_the_help_keep_their_line_breaks():
    done = run_python(HELPS)
    helps = json.loads(done.stdout)["helps"]
    checked = 0
    for stage, (module, _) in cli.STAGES.items():
        lines = {line.strip() for line in helps[f"{stage} --help"][1].splitlines()}
        for line in continued_lines(module):
            assert line in lines, (stage, line)
            checked += 1
    assert checked >= 10


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`mgsd check-config ... | head`: the pipe closes before the configuration is printed."""
    code = (
        "import sys\nfrom mgsd import cli\n"
        f"sys.exit(cli.main(['check-config', {str(REPO / 'pipeline_config.yaml')!r}]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    proc.stdout.close()  # nobody reads: the first write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception" not in err, err


def test_the_sft_stages_of_the_command_line_are_those_of_the_loop():
    from mgsd.cli_args import train_sft
    from mgsd.model.tasks import STAGE_TASK

    stage = next(a for a in train_sft()._actions if a.dest == "stage")
    assert sorted(stage.choices) == sorted(STAGE_TASK)
