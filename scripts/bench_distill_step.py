"""Time the three phases of one on-policy distillation step, as `mgsd distill` runs them.

    python scripts/bench_distill_step.py                    # default preset's scratch shape, CPU
    python scripts/bench_distill_step.py --shape 4b         # Qwen3-VL-4B shape, CUDA (H200)
    python scripts/bench_distill_step.py --shape 4b --dry-run   # build on the meta device only

Phases (the loop's own functions; random weights, so the replies are noise of the right length):
1. sampling: `mgsd.model.generate.generate` on the picture prompts at temperature 1, as
   `onpolicy.sample` calls it but with ``stop_at_answer=False`` and `--reply` new tokens. A row
   that samples an end token stops early: "real" tokens count what was generated, and the row is
   padded with ordinary tokens to exactly `--reply` tokens for the next phases;
2. teacher scoring: the frozen teacher's forward over [teacher prompt (state + plan) + reply]
   inside `distill.distill_step` (its own ``teacher_seconds``);
3. update: the rest of `distill_step` (student forward, log-probs, clipped loss) plus backward,
   gradient clipping and the AdamW step, as in `distill.train`.

Models are built as `mgsd.model.load.load_model` loads them: the student (trained) in float32,
the teacher (frozen) in bfloat16 on CUDA; `common.setup` runs the student under bf16 autocast on
CUDA (fp32 on CPU). `--student-dtype bfloat16` keeps the student in bf16 too, and
`--grad-checkpointing` (not an option of the loop) shows what activation checkpointing would
save. Shapes come from scripts/_bench_common.py (`build`, `SHAPE_4B`); the
4B shape takes the special-token ids of the scratch processor, which changes no size.

Prints a Markdown table: seconds per phase (mean over `--steps` steps after one warm-up step),
tokens/s, and peak memory (CUDA: the phase's own peak of allocated memory; CPU: the process's
peak RSS so far). Torch uses all cores it sees: on a shared machine, compare with
OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import time

import torch
from _bench_common import build, instances, sync  # scripts/ is on sys.path when run
from transformers import Qwen3VLForConditionalGeneration

from mgsd.config import DistillConfig
from mgsd.model import support
from mgsd.model.batching import collate_generate
from mgsd.model.generate import Generation, generate
from mgsd.model.scratch import SPECIAL_TOKENS
from mgsd.model.tasks import Instance, make_example
from mgsd.model.vision import batch_same_size_attention
from mgsd.train import common, distill

DEFAULTS = {  # shape: (batch, reply tokens, image side)
    "default": (16, 160, 64),
    "4b": (32, 256, 256),
}


def mean_prompt(processor, task: str, insts: list[Instance]) -> float:
    """Mean prompt length in tokens (picture tokens included) under `task`."""
    batch = collate_generate(processor, [make_example(task, x, "compact", False) for x in insts])
    return batch["attention_mask"].sum().item() / len(insts)


def peak_gib(device: torch.device) -> float:
    """CUDA: peak allocated since the last call (then reset); CPU: the process's peak RSS."""
    if device.type != "cuda":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def pad_replies(gens: list[Generation], length: int, processor, g: torch.Generator):
    """Replies of exactly `length` tokens: early-stopped rows go on with ordinary tokens."""
    tok, out = processor.tokenizer, []
    ordinary = (len(SPECIAL_TOKENS), len(tok))  # the BPE tokens after the special ones
    for gen in gens:
        extra = torch.randint(*ordinary, (length - len(gen.token_ids),), generator=g).tolist()
        ids = list(gen.token_ids) + extra
        out.append(Generation(ids, tok.decode(ids, skip_special_tokens=True), [], False))
    return out


class TeacherProbe:
    """Hooks on the teacher: its forward's own peak memory (the phase boundary resets it)."""

    def __init__(self, teacher: torch.nn.Module, device: torch.device):
        self.device, self.peak = device, 0.0
        teacher.register_forward_pre_hook(self._start)
        teacher.register_forward_hook(self._done)

    def _start(self, *_) -> None:  # a hook returning a value would replace the inputs
        peak_gib(self.device)

    def _done(self, *_) -> None:
        sync(self.device)
        self.peak = peak_gib(self.device)


def one_step(step, student, teacher, probe, opt, processor, insts, args, cfg, acc, g) -> dict:
    device, raw = acc.device, acc.unwrap_model(student)
    examples = [make_example("student", x, "compact", with_reply=False) for x in insts]
    peak_gib(device)
    sync(device)
    t0 = time.perf_counter()
    raw.eval()  # as onpolicy.sample: no gradient, eval mode, the loop's autocast, seeded per step
    with torch.no_grad(), acc.autocast():
        gens = generate(raw, processor, examples, max_new_tokens=args.reply, temperature=1.0,
                        seed=cfg.seed * 1_000_003 + step * 1009, stop_at_answer=False)  # fmt: skip
    raw.train()
    sync(device)
    t_sample = time.perf_counter() - t0
    m_sample = peak_gib(device)
    real = sum(len(x.token_ids) for x in gens)
    gens = pad_replies(gens, args.reply, processor, g)
    t1 = time.perf_counter()
    allowed_V = support.support_mask(processor.tokenizer, support.output_rows(raw), device)
    loss, st = distill.distill_step(
        student, teacher, processor, insts, examples, gens, cfg, acc, allowed_V,
        loss_kind="sampled_reverse_kl", teacher_sees_plan=True, style="compact",
    )  # fmt: skip
    acc.backward(loss)
    acc.clip_grad_norm_([p for p in student.parameters() if p.requires_grad], cfg.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync(device)
    t_update = time.perf_counter() - t1 - st["teacher_seconds"]
    m_update = peak_gib(device)
    return {
        "sample_s": t_sample, "real": real, "teacher_s": st["teacher_seconds"],
        "update_s": t_update, "mem": (m_sample, probe.peak, m_update),
        "scored": st["tokens"],
    }  # fmt: skip


def table(args, runs: list[dict], prompt_tokens: tuple[float, float], device) -> str:
    n = len(runs)
    mean = {k: sum(r[k] for r in runs) / n for k in ("sample_s", "real", "teacher_s", "update_s")}
    scored = runs[-1]["scored"]
    positions = args.batch * args.reply
    where = "GPU, phase peak allocated" if device.type == "cuda" else "CPU, process peak RSS"
    rows = [
        ("sampling", mean["sample_s"], f"{mean['real']:.0f} real of {positions} positions",
         mean["real"], runs[-1]["mem"][0]),
        ("teacher scoring", mean["teacher_s"],
         f"{scored:.0f} reply (+{prompt_tokens[0]:.0f} prompt / row)", scored, runs[-1]["mem"][1]),
        ("update", mean["update_s"],
         f"{scored:.0f} reply (+{prompt_tokens[1]:.0f} prompt / row)", scored, runs[-1]["mem"][2]),
    ]  # fmt: skip
    total = mean["sample_s"] + mean["teacher_s"] + mean["update_s"]
    lines = [
        f"| phase | seconds | tokens | tokens/s | peak memory GiB ({where}) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, sec, what, tokens, mem in rows:
        lines.append(f"| {name} | {sec:.3f} | {what} | {tokens / sec:,.0f} | {mem:.2f} |")
    lines.append(f"| whole step | {total:.3f} | {positions} | {positions / total:,.0f} | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", choices=tuple(DEFAULTS), default="default")
    ap.add_argument("--batch", type=int, help="prompts per step (default 16 / 32 for 4b)")
    ap.add_argument("--reply", type=int, help="reply tokens (default 160 / 256 for 4b)")
    ap.add_argument("--image", type=int, help="picture side in pixels (default 64 / 256 for 4b)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps, after one warm-up step")
    ap.add_argument("--student-dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--grad-checkpointing", action="store_true", help="on the student")
    ap.add_argument("--dry-run", action="store_true", help="build on the meta device and stop")
    args = ap.parse_args()
    batch, reply, image = DEFAULTS[args.shape]
    args.batch, args.reply, args.image = (
        args.batch or batch,
        args.reply or reply,
        args.image or image,
    )
    acc = common.setup(0)
    device = torch.device("meta") if args.dry_run else acc.device
    processor, config = build(args.shape, args.image)
    insts = instances(args.batch, args.image)
    with torch.device(device):
        student = Qwen3VLForConditionalGeneration(config).to(getattr(torch, args.student_dtype))
    batch_same_size_attention(student)  # as load_model does (the teacher copy keeps it)
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    if acc.device.type == "cuda" or args.dry_run:  # as load_model(trainable=False) on CUDA
        teacher.to(torch.bfloat16)
    if args.grad_checkpointing:
        student.gradient_checkpointing_enable()
    params = sum(p.numel() for p in student.parameters())
    prompt_tokens = tuple(mean_prompt(processor, task, insts) for task in ("teacher", "student"))
    print(f"shape {args.shape}: {params / 1e6:.1f} M parameters, device {device} "
          f"({torch.get_num_threads()} CPU threads), student "
          f"{args.student_dtype} (bf16 autocast on CUDA)"
          f"{', gradient checkpointing' if args.grad_checkpointing else ''}, teacher "
          f"{next(teacher.parameters()).dtype}; batch {args.batch}, reply {args.reply} tokens, "
          f"picture {args.image} px; prompt tokens per row: teacher {prompt_tokens[0]:.0f}, "
          f"student {prompt_tokens[1]:.0f}", flush=True)  # fmt: skip
    # student weights, gradients and two AdamW moments (in the weights' dtype), teacher weights
    element = torch.finfo(getattr(torch, args.student_dtype)).bits // 8
    static = params * 4 * element + params * next(teacher.parameters()).element_size()
    print(f"static memory (weights, gradients, AdamW, teacher): {static / 2**30:.2f} GiB")
    if args.dry_run:
        return
    cfg = DistillConfig(steps=args.steps + 1, batch_size=args.batch, max_new_tokens=args.reply,
                        lr=1e-6)  # fmt: skip
    student.train()
    opt = common.make_optimizer(student.parameters(), cfg.lr, cfg.weight_decay)
    student, opt = acc.prepare(student, opt)
    probe, g = TeacherProbe(teacher, acc.device), torch.Generator().manual_seed(0)
    runs = []
    for step in range(args.steps + 1):
        try:
            run = one_step(step, student, teacher, probe, opt, processor, insts, args, cfg, acc, g)
        except torch.OutOfMemoryError as e:
            sys.exit(f"out of memory at batch {args.batch}, reply {args.reply}: {e}")
        print(f"step {step}{' (warm-up)' if step == 0 else ''}: sampling {run['sample_s']:.2f} s,"
              f" teacher {run['teacher_s']:.2f} s, update {run['update_s']:.2f} s", flush=True)  # fmt: skip
        if step:
            runs.append(run)
    print(table(args, runs, prompt_tokens, acc.device))


if __name__ == "__main__":
    main()
