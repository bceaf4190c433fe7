"""What the benchmark scripts share: the model shapes (the default preset's scratch backbone and
the Qwen3-VL-4B shape), training-like puzzle instances, device sync and a kernel-time profile.

The scripts import it by name (scripts/ is on sys.path when a script runs); no script imports
another script.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen3VLConfig

from mgsd import puzzles
from mgsd.config import ScratchConfig, load_file
from mgsd.data.splits import instance_seed, make_row
from mgsd.model.scratch import SPECIAL_TOKENS, build_processor, build_tokenizer, hf_config
from mgsd.model.tasks import Instance

REPO = Path(__file__).resolve().parents[1]
SHAPE_4B = {
    "text_config": {
        "vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728,
        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "max_position_embeddings": 262144,
        "rope_parameters": {"rope_type": "default", "rope_theta": 5e6,
                            "mrope_section": [24, 20, 20], "mrope_interleaved": True},
    },
    "vision_config": {
        "depth": 24, "hidden_size": 1024, "num_heads": 16, "intermediate_size": 4096,
        "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "out_hidden_size": 2560, "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17],
    },
    "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "tie_word_embeddings": True,
}  # fmt: skip
CASES = (("frozenlake", 4), ("maze", 4), ("minibehaviour", 5))
SHAPE_4B_VOCAB = SHAPE_4B["text_config"]["vocab_size"]


def build(shape: str, image_px: int):
    """(processor, Qwen3VLConfig) with consistent special-token ids."""
    if shape == "default":
        scratch = load_file(REPO / "pipeline_config.yaml").backbone.scratch
        return build_processor(scratch, image_px), build_config("default")
    processor = build_processor(ScratchConfig(vocab_size=SHAPE_4B_VOCAB), image_px)
    ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        **{
            **SHAPE_4B,
            "image_token_id": ids["<|image_pad|>"],
            "video_token_id": ids["<|video_pad|>"],
            "vision_start_token_id": ids["<|vision_start|>"],
            "vision_end_token_id": ids["<|vision_end|>"],
        }
    )
    return processor, config


def instances(n: int, image_px: int) -> list[Instance]:
    """`n` training-like instances, the puzzles in turn."""
    out = []
    for i in range(n):
        name, side = CASES[i % len(CASES)]
        seed = instance_seed(0, name, side, i)
        row = make_row(name, "train", f"bench-{i}", side, seed, "generated",
                       puzzles.get(name).generate(side, seed), image_px)  # fmt: skip
        out.append(Instance(row["id"], name, side, row["state"], row["image"], row["solution"]))
    return out


def build_config(shape: str) -> Qwen3VLConfig:
    if shape == "4b":
        return Qwen3VLConfig(**SHAPE_4B)
    scratch = load_file(REPO / "pipeline_config.yaml").backbone.scratch
    return hf_config(scratch, build_tokenizer(scratch.vocab_size))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


KINDS = (  # first match wins: kernel-name fragments -> kind
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    (
        "matmul",
        (
            "gemm",
            "sm90",
            "cutlass",
            "cublas",
            "matmul",
            "xmma",
            "nvjet",
            "aten::mm",
            "addmm",
            "bmm",
        ),
    ),
    ("loss", ("cross_entropy", "nll", "log_softmax", "softmax")),
    ("copy / cast", ("copy", "cast", "convert", "to_copy")),
)


def profile(step, device: torch.device) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = device.type == "cuda"
    with torch_profile(
        activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]
    ) as prof:
        step()
    totals: dict[str, float] = {}
    top = []
    for e in prof.key_averages():
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us <= 0 or e.key.startswith("ProfilerStep"):
            continue
        name = e.key.lower()
        kind = next(
            (k for k, frags in KINDS if any(f in name for f in frags)), "elementwise / other"
        )
        totals[kind] = totals.get(kind, 0.0) + us
        top.append((us, e.count, e.key[:90]))
    all_us = sum(totals.values())
    print(f"{'GPU kernel' if cuda else 'CPU op'} time in one step: {all_us / 1e3:.1f} ms")
    for kind, us in sorted(totals.items(), key=lambda x: -x[1]):
        print(f"  {kind:22s} {us / 1e3:8.1f} ms  {us / all_us:6.1%}")
    for us, count, key in sorted(top, reverse=True)[:12]:
        print(f"  {us / 1e3:8.1f} ms  x{count:<5d} {key}")
