"""The static decode engine gives the plain engine's tokens and log-probs on the tiny backbone.

On the CPU (fp32) both engines must agree to float precision. On a GPU (run where one is
present) the static engine replays a captured CUDA graph: bf16 weights, and fp32 weights under
bf16 autocast as the distillation student samples, including after in-place weight updates
(the graph must read the current weights) and with LoRA adapters.
"""

from __future__ import annotations

import pytest
import torch

from mgsd import puzzles
from mgsd.config import LoraConfig
from mgsd.model import decode, prompts, support
from mgsd.model.batching import Example, collate_score, score_replies
from mgsd.model.generate import generate
from mgsd.model.load import load_model
from mgsd.model.lora import apply_lora, unwrap

CPU_TOL = 1e-4  # fp32: different attention kernels, same math
BF16_TOL = 0.05  # log-probs of a bf16 model, two kernel orders


@pytest.fixture(scope="module")
def examples(tiny_image_size):
    """Mixed batch: pictures and text-only prompts of different lengths, a forced prefix."""
    fl, mz, mb = (puzzles.get(p) for p in ("frozenlake", "maze", "minibehaviour"))
    states = [fl.generate(3 + i % 4, i) for i in range(5)]
    out = [
        Example(
            prompts.student_messages("frozenlake", "compact"), image=fl.render(s, tiny_image_size)
        )
        for s in states
    ]
    m, b = mz.generate(4, 7), mb.generate(5, 8)
    out.append(Example(prompts.symbolic_messages("maze", m, "compact")))
    out.append(
        Example(
            prompts.student_messages("minibehaviour", "instruct"),
            image=mb.render(b, tiny_image_size),
        )
    )
    out.append(
        Example(
            prompts.student_messages("frozenlake", "compact"),
            image=fl.render(states[0], tiny_image_size),
            prefix=fl.describe(states[0]) + "\n",
        )
    )
    return out


def _same(a, b, tol):
    """Token ids equal up to a near tie; log-probs equal within `tol` on the common prefix."""
    for x, y in zip(a, b, strict=True):
        n = next(
            (i for i, (s, t) in enumerate(zip(x.token_ids, y.token_ids, strict=False)) if s != t),
            None,
        )
        if n is None:
            assert x.token_ids == y.token_ids and x.finished == y.finished
            n = len(x.token_ids)
        else:  # diverged: only allowed where the two choices were (nearly) equally likely
            assert abs(x.logprobs[n] - y.logprobs[n]) < tol, (n, x.logprobs[n], y.logprobs[n])
        assert x.logprobs[:n] == pytest.approx(y.logprobs[:n], abs=tol)


def test_the_tiny_backbone_is_supported(tiny):
    assert decode.supports(tiny[0])


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=0.0),
        dict(temperature=1.0, seed=3),
        dict(temperature=1.3, top_p=0.8, seed=4),
        dict(temperature=1.0, seed=5, stop_at_answer=False),
    ],
    ids=["greedy", "sampled", "nucleus", "no-answer-stop"],
)
def test_static_engine_equals_plain_engine_on_cpu(tiny, examples, settings):
    model, processor = tiny
    static = generate(model, processor, examples, 40, engine="static", **settings)
    plain = generate(model, processor, examples, 40, engine="hf", **settings)
    assert [g.token_ids for g in static] == [g.token_ids for g in plain]
    _same(static, plain, CPU_TOL)


def test_attention_span_grows_with_the_reply(tiny, examples, monkeypatch):
    """Attention reads the filled slots rounded up to `SPAN`: with a small span the reply
    crosses many span boundaries, each of which must include the slot just written."""
    monkeypatch.setattr(decode, "SPAN", 8)
    model, processor = tiny
    static = generate(model, processor, examples, 40, engine="static", temperature=1.0, seed=6)
    plain = generate(model, processor, examples, 40, engine="hf", temperature=1.0, seed=6)
    assert [g.token_ids for g in static] == [g.token_ids for g in plain]
    _same(static, plain, CPU_TOL)


def test_static_engine_with_lora_equals_plain_engine(tiny_model_dir, examples):
    model, processor = load_model(tiny_model_dir, device="cpu")
    model = apply_lora(model, LoraConfig(rank=4, alpha=8, dropout=0.1, target_modules="all-linear"))
    with torch.no_grad():  # adapters start at zero: make them count
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    static = generate(model, processor, examples, 24, temperature=1.0, seed=1, engine="static")
    plain = generate(model, processor, examples, 24, temperature=1.0, seed=1, engine="hf")
    assert [g.token_ids for g in static] == [g.token_ids for g in plain]
    _same(static, plain, CPU_TOL)
    assert model.training  # generate restores the mode


@pytest.mark.slow
def test_compiled_layer_step_equals_plain_engine(tiny, examples):
    """The torch.compile'd layer step (what a GPU runs inside its graph), here on the CPU."""
    model, processor = tiny
    static = generate(
        model, processor, examples, 24, temperature=1.0, seed=2, engine="static", compiled=True
    )
    assert unwrap(model)._mgsd_decode_step.compiled
    plain = generate(model, processor, examples, 24, temperature=1.0, seed=2, engine="hf")
    assert [g.token_ids for g in static] == [g.token_ids for g in plain]
    _same(static, plain, CPU_TOL)


def test_unknown_engine_is_refused(tiny, examples):
    with pytest.raises(ValueError, match="engine"):
        generate(*tiny, examples[:1], 4, engine="vllm")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("student", [False, True], ids=["bf16", "fp32+autocast"])
def test_graph_engine_equals_plain_engine_on_gpu(tiny_model_dir, examples, student):
    model, processor = load_model(tiny_model_dir, device="cuda", trainable=student)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if student else torch.no_grad()
    for round_ in range(2):
        with ctx:
            static = generate(model, processor, examples, 40, temperature=1.0, seed=round_)
            assert unwrap(model)._mgsd_decode_step.graphs
            plain = generate(
                model, processor, examples, 40, temperature=1.0, seed=round_, engine="hf"
            )
        _same(static, plain, BF16_TOL)
        batch = collate_score(processor, examples, [g.token_ids for g in static])
        with ctx, torch.no_grad():
            allowed_V = support.support_mask(
                processor.tokenizer, support.output_rows(model), "cuda"
            )
            scored, _ = score_replies(model, {k: v.cuda() for k, v in batch.items()}, allowed_V)
        for b, g in enumerate(static):
            assert g.logprobs == pytest.approx(scored[b, : len(g.logprobs)].tolist(), abs=BF16_TOL)
        with torch.no_grad():  # an optimizer step in place: the replayed graph must see it
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
