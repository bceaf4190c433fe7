"""Collate time of picture prompts: `collate_generate` with the one-pass picture preprocessing
(`mgsd.model.batching._batched_pictures`) and with the processor's per-picture loop.

    python scripts/bench_collate.py --shape 4b --batch 64 --repeat 5

Builds the shape's processor (the scratch processor; 256 px pictures for 4b, the default
preset's size otherwise) and prints the median of `--repeat` timed calls after one warm-up, for
both paths, and checks that they give the same tensors.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _bench_common import build, instances

from mgsd.model import batching
from mgsd.model.tasks import make_example


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", choices=("default", "4b"), default="4b")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    image = 256 if args.shape == "4b" else 64
    processor, _ = build(args.shape, image)
    examples = [make_example("student", x, "compact", False) for x in instances(args.batch, image)]
    one_pass = batching._batched_pictures
    results = {}
    for name, pictures in (("one pass", one_pass), ("processor loop", lambda *a: None)):
        batching._batched_pictures = pictures
        batch = batching.collate_generate(processor, examples)  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            batching.collate_generate(processor, examples)
            times.append(time.perf_counter() - t0)
        results[name] = batch
        print(f"{name}: {statistics.median(times):.3f} s for {args.batch} prompts "
              f"(median of {args.repeat})")  # fmt: skip
    batching._batched_pictures = one_pass
    a, b = results.values()
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    print("same tensors:", same)


if __name__ == "__main__":
    main()
