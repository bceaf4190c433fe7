"""Time one training step (forward + backward + AdamW) of a Qwen3-VL shape with random weights.

    python scripts/bench_train_step.py --shape default --batch 4 --seq 256        # CPU is fine
    python scripts/bench_train_step.py --shape 4b --finetune lora --batch 8 --seq 1024   # H200
    python scripts/bench_train_step.py --shape 4b --dry-run    # build on the meta device only
    python scripts/bench_train_step.py --shape 4b --batch 4 --seq 1024 --compile --profile

`--compile` compiles every decoder layer and vision block in place (torch.compile, one graph
shared by the identical layers); `--profile` prints the CUDA kernels that took the most time
in one extra step, grouped by kind (matmuls, attention, elementwise, optimizer, loss).

Each sequence is one 256 px picture (its image tokens) followed by text up to `--seq` tokens;
labels on every text token. bf16 autocast on CUDA (fp32 master weights), fp32 on CPU. Prints
tokens/s (all sequence tokens, image tokens included), peak memory and MFU against the H200's
989 TFLOP/s dense bf16 peak.

FLOP count per step, "trainable-aware" (B sequences, T tokens each, P vision patches per image):
  text    B*T * (2N + 2N + 2N_train) + B*T * 12*L*d_attn*T
  vision  B*2*k*(P*M_patch + P/4*M_merge) + B*P * (4 or 12)*L_v*d_v*P  (k = 3 trained, 1 frozen)
N = text matmul parameters per token (attention + MLP of every layer, plus the output head
V*d, tied or not), N_train = the trainable share of N (all of it for full fine-tuning, the LoRA
factors for LoRA); 2N forward, 2N for the input gradients, 2N_train for the weight gradients.
The attention term counts QK^T and AV (2 matmuls x 2 FLOPs x d_attn = L*heads*head_dim per
context token) forward (4) and backward (8) with no causal discount. Vision: M_patch = patch
embedding + blocks (run per patch), M_merge = merger + deepstack mergers (per merged token);
a frozen tower runs forward only; patches attend within their picture. MFU = FLOPs per step /
step time / 989e12.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from _bench_common import build_config, profile  # scripts/ is on sys.path when run
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from mgsd.model.lora import unwrap
from mgsd.model.vision import batch_same_size_attention

PEAK_FLOPS = 989e12  # H200 SXM, dense bf16
IMAGE_PX = 256
LM_LINEARS = r".*language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"


def matmul_params(modules, trainable: bool = False) -> int:
    """Weights of the Linear / Conv3d layers under `modules` (all, or only those trained)."""
    return sum(
        m.weight.numel()
        for module in modules
        for m in module.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d))
        and (m.weight.requires_grad or not trainable)
    )


def step_flops(model, config: Qwen3VLConfig, batch: int, seq: int, patches: int) -> float:
    t, v = config.text_config, config.vision_config
    inner = unwrap(model)
    lm, visual = inner.model.language_model, inner.model.visual
    n = matmul_params([lm, inner.lm_head])
    n_train = matmul_params([lm, inner.lm_head], trainable=True)
    d_attn = t.num_attention_heads * t.head_dim
    text = batch * seq * (4 * n + 2 * n_train + 12 * t.num_hidden_layers * d_attn * seq)
    # blocks run on every patch, the mergers on every merged image token
    per_patch = [visual.patch_embed, visual.blocks]
    per_token = [visual.merger, visual.deepstack_merger_list]
    trained = matmul_params([visual], trainable=True) > 0
    passes, attn = (3, 12) if trained else (1, 4)  # a frozen tower only runs forward
    merged = patches // v.spatial_merge_size**2
    vision = 2 * passes * (patches * matmul_params(per_patch) + merged * matmul_params(per_token))
    vision += attn * v.depth * v.hidden_size * patches * patches
    return text + batch * vision


def make_inputs(
    config: Qwen3VLConfig, batch: int, seq: int, device: torch.device
) -> tuple[dict, int]:
    v = config.vision_config
    grid = IMAGE_PX // v.patch_size
    patches, image_tokens = grid * grid, grid * grid // v.spatial_merge_size**2
    if seq < image_tokens + 3:
        raise SystemExit(f"--seq {seq} is shorter than one picture ({image_tokens + 3} tokens)")
    g = torch.Generator().manual_seed(0)
    ids_BT = torch.randint(10, config.text_config.vocab_size, (batch, seq), generator=g)
    special = [config.image_token_id, config.video_token_id, config.vision_start_token_id]
    ids_BT[torch.isin(ids_BT, torch.tensor([*special, config.vision_end_token_id]))] = 10
    ids_BT[:, 0] = config.vision_start_token_id
    ids_BT[:, 1 : 1 + image_tokens] = config.image_token_id
    ids_BT[:, 1 + image_tokens] = config.vision_end_token_id
    types_BT = (ids_BT == config.image_token_id).long()
    labels_BT = ids_BT.masked_fill(torch.arange(seq) < image_tokens + 2, -100)
    patch_dim = 3 * v.temporal_patch_size * v.patch_size**2
    inputs = {
        "input_ids": ids_BT,
        "attention_mask": torch.ones_like(ids_BT),
        "labels": labels_BT,
        "mm_token_type_ids": types_BT,
        "pixel_values": torch.randn(batch * patches, patch_dim, generator=g),
        "image_grid_thw": torch.tensor([[1, grid, grid]] * batch),
    }
    return {k: x.to(device) for k, x in inputs.items()}, patches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", choices=("default", "4b"), default="default")
    ap.add_argument("--finetune", choices=("full", "lora"), default="full")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256, help="tokens per sequence, picture included")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--dry-run", action="store_true", help="build on the meta device and stop")
    ap.add_argument("--compile", action="store_true", help="torch.compile each layer")
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--profile", action="store_true", help="kernel time breakdown of one step")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    config = build_config(args.shape)
    torch.manual_seed(0)
    with torch.device("meta" if args.dry_run else device):
        model = Qwen3VLForConditionalGeneration(config)
    batch_same_size_attention(model)  # as load_model does
    if args.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LM_LINEARS)
        model = get_peft_model(model, lora)
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    v = config.vision_config
    patches = (IMAGE_PX // v.patch_size) ** 2
    flops = step_flops(model, config, args.batch, args.seq, patches)
    tokens = args.batch * args.seq
    print(f"shape {args.shape}, finetune {args.finetune}, device {device}, batch {args.batch}")
    print(f"parameters {total / 1e6:.1f} M, trained {trained / 1e6:.2f} M")
    print(f"training FLOPs per token {flops / tokens:.4g} (seq {args.seq})")
    if args.dry_run:
        return
    inputs, _ = make_inputs(config, args.batch, args.seq, device)
    if args.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.compile:
        inner = unwrap(model)
        for layer in [*inner.model.language_model.layers, *inner.model.visual.blocks]:
            layer.compile()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    model.train()

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**inputs, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # synchronises

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (GPU, allocated)"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process RSS)"
    print(f"step {seconds * 1e3:.1f} ms, {tokens / seconds:,.0f} tokens/s, peak memory {peak}")
    print(f"MFU {flops / seconds / PEAK_FLOPS:.2%} (of {PEAK_FLOPS / 1e12:.0f} TFLOP/s bf16)")
    if args.profile:
        profile(step, device)


if __name__ == "__main__":
    main()
