"""The README's commands do what it says: its configuration examples are valid, and the
recovery advice names flags Snakemake has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from mgsd import config as C

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def commands() -> list[list[str]]:
    """The commands of the README's bash blocks, continuation lines joined, as argv lists."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if line.strip()]


def config_overrides(argv: list[str]) -> dict:
    from snakemake.cli import parse_config

    i = argv.index("--config")
    entries = []
    for arg in argv[i + 1 :]:
        if arg.startswith("-") or "=" not in arg:
            break
        entries.append(arg)
    return parse_config(entries)


def test_the_command_line_override_examples_are_valid():
    examples = [c for c in commands() if "--config" in c]
    assert len(examples) >= 3, examples
    for argv in examples:
        files = [REPO / "pipeline_config.yaml"]
        if "--configfile" in argv:
            files.append(REPO / argv[argv.index("--configfile") + 1])
        elif argv[:2] == ["mgsd", "check-config"]:
            files = [REPO / a for a in argv[2 : argv.index("--config")]]
        cfg = C.load_file(*files, overrides=config_overrides(argv))
        assert cfg.run, argv


def test_the_recovery_advice_names_flags_snakemake_has():
    from snakemake.cli import get_argument_parser

    flags = set(get_argument_parser()._option_string_actions)
    for flag in ("--unlock", "--rerun-incomplete"):
        assert f"`snakemake {flag}`" in README or f"`{flag}`" in README, flag
        assert flag in flags, flag
    assert "python3 -m venv" in README and "download.pytorch.org/whl/cpu" in README
