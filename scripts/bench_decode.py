"""Decode throughput of `mgsd.model.generate.generate` (the sampler of distillation and evaluation).

    python scripts/bench_decode.py --shape 4b --batch 32 64 128 --reply 256     # H200
    python scripts/bench_decode.py --shape default --batch 16 48 --reply 160     # CPU

Builds the shape with random weights in bf16 (fp32 on CPU), then, for each engine (`static`:
static KV cache + CUDA graph, `hf`: the library's generate), times replies of exactly `--reply`
new tokens (no stop at the answer) for each batch size of picture prompts (256 px for the 4b
shape, the default preset's size otherwise). The first call of a shape (prefill, graph capture
and decode) is timed apart from the steady state (a second call, which reuses the graph).
Prints decoded positions/s (batch x decode steps / s: rows that ended early at a sampled end
token are still decoded each step) over the whole call and over its decode phase alone (after
the prompts are collated and prefilled; `generate`'s `timings`), the kept reply tokens/s,
instances/s and the share of the memory-bandwidth roofline in positions/s: a decode step must
read every weight once, so at most `bandwidth / weight bytes` steps per second, i.e.
`batch x 4.8e12 / weight bytes` tokens/s on an H200, weight bytes = the text decoder and output head (the vision tower runs only in the
prefill; KV-cache reads are left out, which flatters the roofline at long replies). `--profile`
adds the CUDA kernel time of one more call, grouped by kind.
"""

from __future__ import annotations

import argparse
import time

import torch
from _bench_common import build, instances, profile, sync
from transformers import Qwen3VLForConditionalGeneration

from mgsd.model.generate import generate
from mgsd.model.tasks import make_example
from mgsd.model.vision import batch_same_size_attention

HBM_BYTES_PER_S = 4.8e12  # H200 datasheet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", choices=("default", "4b"), default="default")
    ap.add_argument("--batch", type=int, nargs="+", default=[16])
    ap.add_argument("--reply", type=int, default=160, help="new tokens per reply")
    ap.add_argument("--image", type=int, help="picture side (default 64 / 256 for 4b)")
    ap.add_argument("--engine", nargs="+", choices=("static", "hf"), default=["static", "hf"])
    ap.add_argument("--no-compile", action="store_true", help="static engine: graph, no compile")
    ap.add_argument("--profile", action="store_true",
                    help="kernel time breakdown of one more call at the first batch size")  # fmt: skip
    args = ap.parse_args()
    image = args.image or (256 if args.shape == "4b" else 64)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    processor, config = build(args.shape, image)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration(config).to(dtype).eval()
    batch_same_size_attention(model)  # as load_model does
    weight_bytes = decode_weight_bytes(model)
    total_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"{args.shape}: {total_bytes / 1e9:.2f} GB of weights on {device} ({dtype}), "
          f"{weight_bytes / 1e9:.2f} GB read per decode step")  # fmt: skip
    insts = instances(max(args.batch), image)
    compiled = device.type == "cuda" and not args.no_compile
    label = {"static": "static" + ("+compile" if compiled else ""), "hf": "hf"}
    print("| engine | batch | reply tokens | first call s | seconds | collate / prefill / decode s "
          "| positions/s | roofline share | decode positions/s | decode roofline share "
          "| kept tokens/s | instances/s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for engine in args.engine:
        for batch in args.batch:
            examples = [make_example("student", x, "compact", False) for x in insts[:batch]]
            times, phases = [], {}
            for timings in (None, phases):  # the first call of a shape captures its graphs
                sync(device)
                t0 = time.perf_counter()
                gens = generate(model, processor, examples, args.reply, temperature=1.0, seed=0,
                                stop_at_answer=False, engine=engine, timings=timings,
                                compiled=False if args.no_compile else None)  # fmt: skip
                sync(device)
                times.append(time.perf_counter() - t0)
            dt = times[-1]
            tokens = sum(len(g.token_ids) for g in gens)
            # every step decodes a position of every row (rows past their end token too); the
            # prefill yields the first, each decode step one more
            steps = max(len(g.token_ids) for g in gens)
            roof = batch * HBM_BYTES_PER_S / weight_bytes
            whole = batch * steps / dt
            in_decode = batch * (steps - 1) / phases["decode"]
            split = " / ".join(
                f"{phases.get(k, 0.0):.2f}" for k in ("collate", "prefill", "decode")
            )
            print(f"| {label[engine]} | {batch} | {tokens / batch:.0f} | {times[0]:.2f} | {dt:.2f} | "
                  f"{split} | {whole:,.0f} | {whole / roof:.1%} | {in_decode:,.0f} | "
                  f"{in_decode / roof:.1%} | {tokens / dt:,.0f} | {batch / dt:.1f} |", flush=True)  # fmt: skip
    if args.profile:
        examples = [make_example("student", x, "compact", False) for x in insts[: args.batch[0]]]
        profile(lambda: generate(model, processor, examples, args.reply, temperature=1.0, seed=0,
                                 stop_at_answer=False, engine=args.engine[0],
                                 compiled=False if args.no_compile else None), device)  # fmt: skip


def decode_weight_bytes(model) -> int:
    """Bytes of the weights a decode step reads: the text decoder and the output head (the
    vision tower runs only in the prefill; a tied output head is counted once)."""
    seen = {p.data_ptr(): p for p in model.model.language_model.parameters()}
    seen.setdefault(model.lm_head.weight.data_ptr(), model.lm_head.weight)
    return sum(p.numel() * p.element_size() for p in seen.values())


if __name__ == "__main__":
    main()
