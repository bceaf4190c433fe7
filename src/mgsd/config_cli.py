"""`mgsd check-config FILE [FILE ...]`: validate config files (later ones overlay earlier ones)."""

from __future__ import annotations

import argparse
import sys

import yaml

from mgsd.config import ConfigError, load_file, to_dict


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="mgsd check-config", description=__doc__)
    ap.add_argument("files", nargs="+", help="pipeline_config.yaml, then any presets")
    args = ap.parse_args(argv)
    try:
        cfg = load_file(*args.files)
    except ConfigError as e:
        print(f"mgsd check-config: {e}", file=sys.stderr)
        return 1
    yaml.safe_dump(to_dict(cfg), sys.stdout, sort_keys=False)
    return 0
