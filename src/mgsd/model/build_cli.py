r"""`mgsd build-scratch`: a Qwen3-VL architecture with random weights and an offline processor.

    mgsd build-scratch --config '<backbone.scratch as JSON>' --image-size 64 \
        --out results/default/models/scratch/model
"""

from __future__ import annotations

import argparse
import sys

from mgsd.config import ConfigError, ScratchConfig, check_scratch, load_section


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="mgsd build-scratch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--config", required=True, help="the backbone.scratch section as JSON")
    ap.add_argument("--image-size", type=int, required=True, help="side of every picture")
    ap.add_argument("--out", required=True, help="model folder to write")
    args = ap.parse_args(argv)
    try:
        cfg = load_section(ScratchConfig, args.config, "backbone.scratch")
        check_scratch(cfg)
    except ConfigError as e:
        print(f"mgsd build-scratch: {e}", file=sys.stderr)
        return 1
    from mgsd.model.scratch import build_scratch

    path = build_scratch(cfg, args.image_size, args.out)
    print(f"wrote a scratch backbone to {path}")
    return 0
