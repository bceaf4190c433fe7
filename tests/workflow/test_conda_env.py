"""`snakemake --use-conda`: the environment file installs this repository where Snakemake uses it.

No conda channel can be reached from the test machines, so `conda` is a stand-in that answers
the calls Snakemake makes and performs the step of `conda env create` that this repository
controls: the `pip:` entries, written to a requirements file beside the env file and run with
pip from that folder, as conda does (conda/env/installers/pip.py). Snakemake itself is real: it
copies envs/mgsd.yaml to its conda prefix first, which is what broke a relative `-e ..`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_CONDA = """#!{python}
import json, os, subprocess, sys

import yaml

args = sys.argv[1:]
if args == ["--version"]:
    print("conda 25.1.1")
elif args[:2] == ["info", "--json"]:
    print(json.dumps({{"conda_prefix": {prefix!r}, "platform": "linux-64"}}))
elif args[:2] == ["config", "--get"]:
    print(json.dumps({{"get": {{"channel_priority": "strict"}}}}))
elif args[:2] == ["env", "create"]:
    env_file = args[args.index("--file") + 1].strip('"')
    prefix = args[args.index("--prefix") + 1].strip('"')
    deps = yaml.safe_load(open(env_file))["dependencies"]
    pip = [line for d in deps if isinstance(d, dict) for line in d.get("pip", [])]
    folder = os.path.dirname(os.path.abspath(env_file))
    requirements = os.path.join(folder, "condaenv.requirements.txt")
    with open(requirements, "w") as f:
        f.write("\\n".join(pip) + "\\n")
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
           "--no-build-isolation", "--report", {report!r}, "-r", requirements]
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    sys.stderr.write(done.stdout + done.stderr)
    if done.returncode:
        sys.exit(done.returncode)
    os.makedirs(os.path.join(prefix, "conda-meta"), exist_ok=True)
"""  # "conda clean" and anything else: nothing to do


@pytest.mark.slow
def test_use_conda_installs_this_repository_from_the_copied_env_file(tmp_path):
    bin_dir, report = tmp_path / "bin", tmp_path / "pip_report.json"
    bin_dir.mkdir()
    conda = bin_dir / "conda"
    conda.write_text(
        FAKE_CONDA.format(python=sys.executable, prefix=str(tmp_path), report=str(report))
    )
    conda.chmod(0o755)
    workdir = tmp_path / "work"
    workdir.mkdir()
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
        "--cores", "1", "--use-conda", "--conda-create-envs-only",
        "--configfile", str(REPO / "presets" / "smoke.yaml"),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    copies = list((workdir / ".snakemake" / "conda").glob("*.yaml"))
    assert len(copies) == 1, out[-4000:]  # the env file was used from Snakemake's copy
    installed = json.loads(report.read_text())["install"]
    assert [i["metadata"]["name"] for i in installed] == ["mgsd"], installed
    assert installed[0]["is_direct"] and installed[0]["download_info"]["dir_info"]["editable"]
    assert Path(installed[0]["download_info"]["url"].removeprefix("file://")) == REPO
