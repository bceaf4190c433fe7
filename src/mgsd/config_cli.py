"""`mgsd check-config FILE [FILE ...] [--config KEY=VALUE ...]`: validate a configuration and
print it merged.

    mgsd check-config pipeline_config.yaml presets/smoke.yaml --config grounding='{steps: 100}'

Later files overlay earlier ones (as `snakemake --configfile`); `--config` overrides are read as
`snakemake --config` reads them (`mgsd.config.command_line`).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from mgsd.config import ConfigError, load_file, to_dict


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="mgsd check-config",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("files", nargs="+", help="pipeline_config.yaml, then any presets")
    ap.add_argument(
        "--config",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="overrides as for snakemake --config, e.g. distill='{lr: 1e-4, kl_baseline: true}'",
    )
    args = ap.parse_args(argv)
    try:
        overrides = dict(_key_value(entry) for entry in args.config)
        cfg = load_file(*args.files, overrides=overrides)
    except ConfigError as e:
        print(f"mgsd check-config: {e}", file=sys.stderr)
        return 1
    yaml.safe_dump(to_dict(cfg), sys.stdout, sort_keys=False)
    return 0


def _key_value(entry: str) -> tuple[str, str]:
    key, sep, value = entry.partition("=")
    if not sep or not key:
        raise ConfigError(f"--config {entry!r}: expected KEY=VALUE")
    return key, value
