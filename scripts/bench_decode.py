"""Decode throughput of `mgsd.model.generate.generate` (the sampler of distillation and evaluation).

    python scripts/bench_decode.py --shape 4b --batch 32 64 128 --reply 256     # H200
    python scripts/bench_decode.py --shape default --batch 16 48 --reply 160     # CPU

Builds the shape with random weights in bf16 (fp32 on CPU), then times replies of exactly
`--reply` new tokens (no stop at the answer) for each batch size of picture prompts (256 px for
the 4b shape, the default preset's size otherwise). Prints decode tokens/s, instances/s and the
share of the memory-bandwidth roofline: a decode step must read every weight once, so at most
`bandwidth / weight bytes` steps per second, i.e. `batch x 4.8e12 / weight bytes` tokens/s on an
H200 (KV-cache reads are left out, which flatters the roofline at long replies).
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_distill_step import build, instances
from transformers import Qwen3VLForConditionalGeneration

from mgsd.model.generate import generate
from mgsd.model.tasks import make_example

HBM_BYTES_PER_S = 4.8e12  # H200 datasheet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", choices=("default", "4b"), default="default")
    ap.add_argument("--batch", type=int, nargs="+", default=[16])
    ap.add_argument("--reply", type=int, default=160, help="new tokens per reply")
    ap.add_argument("--image", type=int, help="picture side (default 64 / 256 for 4b)")
    args = ap.parse_args()
    image = args.image or (256 if args.shape == "4b" else 64)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    processor, config = build(args.shape, image)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration(config).to(dtype).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"{args.shape}: {weight_bytes / 1e9:.2f} GB of weights on {device} ({dtype})")
    insts = instances(max(args.batch), image)
    print("| batch | reply tokens | seconds | decode tokens/s | instances/s | roofline share |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch in args.batch:
        examples = [make_example("student", x, "compact", False) for x in insts[:batch]]
        generate(model, processor, examples[:2], 8, stop_at_answer=False)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        gens = generate(model, processor, examples, args.reply, temperature=1.0, seed=0,
                        stop_at_answer=False)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        tokens = sum(len(g.token_ids) for g in gens)
        roof = batch * HBM_BYTES_PER_S / weight_bytes
        print(f"| {batch} | {tokens / batch:.0f} | {dt:.2f} | {tokens / dt:,.0f} | "
              f"{batch / dt:.1f} | {tokens / dt / roof:.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()
