"""Batched generation with per-token log-probs, stopping at the closed answer block.

`generate(model, processor, examples, max_new_tokens, ...)` decodes left-padded prompts (from
`collate_generate`) with one chooser of ours, `_Chooser`, that sees the raw logits of each
step and picks the next token itself (argmax when ``temperature == 0``, else a sample from
softmax(logits / temperature) restricted to the `top_p` nucleus, drawn from a private generator
seeded by `seed`), recording the log-prob of the chosen token under the model's temperature-1
distribution (``log_softmax`` of the logits over the support, the quantity distillation
compares with the teacher). Both the draw and the recorded log-prob are over the sampler's
support (`mgsd.model.support`): structural special tokens (chat and vision markers) and ids
past the tokenizer (padding rows of the embedding) are never chosen and get no probability,
exactly as in every log-prob of training.

Two engines run this same recipe: "static" (`mgsd.model.decode`: static KV cache, the decode
step captured as a CUDA graph on a GPU; the default for Qwen3-VL) and "hf" (the library's
``model.generate`` with `_Chooser` as its only logits processor, the reference the static
engine is tested against).

A sequence stops at ``<|im_end|>`` / ``<|endoftext|>`` (kept in its token ids) or, with
`stop_at_answer`, right after the token that closes ``</answer>``. A reply that never closes an
answer comes back with ``finished=False``; nothing here raises on model output. Token ids and
text exclude the prompt and the forced reply prefix; text is decoded without special tokens.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from mgsd.model import decode, support
from mgsd.model.batching import Example, collate_generate, end_id, pad_id, to_device
from mgsd.model.lora import unwrap
from mgsd.puzzles.base import CLOSE_ANSWER

_TAIL_TOKENS = 16  # enough tokens to hold "</answer>" even split into single characters


@dataclass(frozen=True)
class Generation:
    """One reply: generated token ids, their log-probs (temperature 1), decoded text."""

    token_ids: list[int]
    text: str
    logprobs: list[float]
    finished: bool  # the reply closed an answer block


class _Chooser(LogitsProcessor):
    """Picks each next token and records its log-prob, both over the sampler's support."""

    def __init__(self, temperature: float, top_p: float, seed: int | None, tokenizer: Any):
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.tokenizer = tokenizer
        self.generator: torch.Generator | None = None
        self.allowed_V: torch.Tensor | None = None  # the support (mgsd.model.support)
        self.logprobs: list[torch.Tensor] = []  # one (B,) per step (plain engine)

    def _sample(self, logits_BV: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            self.generator = torch.Generator(device=logits_BV.device)
            seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, ()))
            self.generator.manual_seed(seed)
        probs_BV = torch.softmax(logits_BV / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_BV, order_BV = probs_BV.sort(dim=-1, descending=True)
            # keep the smallest prefix whose mass reaches top_p (always the top token)
            drop_BV = sorted_BV.cumsum(-1) - sorted_BV >= self.top_p
            sorted_BV = sorted_BV.masked_fill(drop_BV, 0.0)
            probs_BV = torch.zeros_like(probs_BV).scatter(-1, order_BV, sorted_BV)
        return torch.multinomial(probs_BV, 1, generator=self.generator).squeeze(1)

    def choose(self, scores_BV: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The next token of each row and its log-prob (temperature 1, over the support)."""
        rows = scores_BV.shape[1]
        if self.allowed_V is None or self.allowed_V.shape[0] != rows:
            self.allowed_V = support.support_mask(self.tokenizer, rows, scores_BV.device)
        logits_BV = support.restrict(scores_BV.float(), self.allowed_V)
        chosen_B = logits_BV.argmax(-1) if self.temperature == 0 else self._sample(logits_BV)
        logprobs_BV = torch.log_softmax(logits_BV, dim=-1)
        return chosen_B, logprobs_BV.gather(1, chosen_B[:, None]).squeeze(1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        chosen_B, logprob_B = self.choose(scores)
        self.logprobs.append(logprob_B)
        forced_BV = torch.full_like(scores, float("-inf"), dtype=torch.float32)
        return forced_BV.scatter(1, chosen_B[:, None], 0.0)


class _Stops(StoppingCriteria):
    """Where each row stops: its first end token, or (`at_answer`) its closed answer block."""

    def __init__(self, tokenizer: Any, end_ids: list[int], at_answer: bool, batch_size: int):
        self.tokenizer, self.end_ids, self.at_answer = tokenizer, set(end_ids), at_answer
        vocab = tokenizer.get_vocab()
        # "</answer>" ends with ">": only positions holding such a token need decoding
        self.has_gt = {i for t, i in vocab.items() if ">" in t}
        self.stopped_at: list[int | None] = [None] * batch_size  # generated tokens at the stop
        self.scanned = 0  # generated positions already looked at
        self.prompt_len = 0  # plain engine: where generated tokens start in input_ids

    def update(self, new_BN: torch.Tensor) -> torch.Tensor:
        """Scans the positions not yet seen; (B,) bool, rows that have stopped by now."""
        n = new_BN.shape[1]
        first = max(0, self.scanned - _TAIL_TOKENS)  # unseen positions and the tails they need
        for b, ids in enumerate(new_BN[:, first:].tolist()):
            if self.stopped_at[b] is not None:
                continue
            for pos in range(self.scanned, n):
                token = ids[pos - first]
                if token in self.end_ids:
                    self.stopped_at[b] = pos + 1
                    break
                if self.at_answer and token in self.has_gt:
                    start = max(first, pos + 1 - _TAIL_TOKENS) - first
                    if CLOSE_ANSWER.search(self.tokenizer.decode(ids[start : pos + 1 - first])):
                        self.stopped_at[b] = pos + 1
                        break
        self.scanned = n
        return torch.tensor([s is not None for s in self.stopped_at], dtype=torch.bool)

    def all_done(self, new_BN: torch.Tensor) -> bool:
        return bool(self.update(new_BN).all())

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done_B = self.update(input_ids[:, self.prompt_len :].cpu())
        return done_B.to(input_ids.device)


def _generation_config(processor: Any, max_new_tokens: int) -> GenerationConfig:
    tok = processor.tokenizer
    ends = {end_id(processor), tok.convert_tokens_to_ids("<|endoftext|>")}
    if tok.eos_token_id is not None:
        ends.add(tok.eos_token_id)
    ends = sorted(i for i in ends if i is not None and i != tok.unk_token_id)
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=ends,
        pad_token_id=pad_id(processor),
        use_cache=True,
    )


ENGINES = ("auto", "static", "hf")


def generate(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop_at_answer: bool = True,
    engine: str = "auto",
    timings: dict[str, float] | None = None,
    compiled: bool | None = None,
) -> list[Generation]:
    """Replies to `examples` in one batch; see the module docstring for the exact semantics.

    `engine`: "static" (`mgsd.model.decode`: static KV cache, CUDA graphs on a GPU), "hf" (the
    library's ``generate``), "auto": static for the Qwen3-VL layout, else hf. `timings`, if
    given, receives seconds per phase: "collate" (prompts and pictures to tensors on the
    device), then the static engine's "setup", "prefill" and "decode" (the plain engine's
    "decode" holds all of its generate), and "finish" (cutting and decoding the replies).
    `compiled`: the static engine's choice (default: compile where CUDA graphs are captured).
    """
    if temperature < 0 or not 0 < top_p <= 1 or max_new_tokens < 1:
        raise ValueError(
            f"generate: need temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 1 "
            f"(got {temperature}, {top_p}, {max_new_tokens})"
        )
    if engine not in ENGINES:
        raise ValueError(f"generate: engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        engine = "static" if decode.supports(model) else "hf"
    elif engine == "static" and not decode.supports(model):
        raise ValueError(f"generate: the static engine does not know {type(model).__name__}")
    device = next(model.parameters()).device
    start = time.perf_counter()
    batch = to_device(collate_generate(processor, examples), device)
    start = decode.lap(timings, "collate", start, device)
    config = _generation_config(processor, max_new_tokens)
    tok = processor.tokenizer
    chooser = _Chooser(temperature, top_p, seed, tok)
    stops = _Stops(tok, config.eos_token_id, stop_at_answer, len(examples))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if engine == "static":
                new_BN, logprobs_BN = decode.static_decode(
                    model,
                    batch,
                    max_new_tokens,
                    chooser.choose,
                    stops.all_done,
                    compiled=compiled,
                    timings=timings,
                )
            else:
                new_BN, logprobs_BN = _hf_generate(model, batch, config, chooser, stops)
                decode.lap(timings, "decode", start, device)
    finally:
        model.train(was_training)
    start = time.perf_counter()
    results = []
    for b in range(len(examples)):
        ids = new_BN[b].tolist()
        cut = len(ids) if stops.stopped_at[b] is None else stops.stopped_at[b]
        ends = [i for i, t in enumerate(ids[:cut]) if t in config.eos_token_id]
        cut = ends[0] + 1 if ends else cut
        text = tok.decode(ids[:cut], skip_special_tokens=True)
        logprobs = logprobs_BN[b, :cut].tolist()
        results.append(
            Generation(ids[:cut], text, logprobs, finished=bool(CLOSE_ANSWER.search(text)))
        )
    decode.lap(timings, "finish", start, device)
    return results


def _hf_generate(
    model: Any, batch: dict, config: GenerationConfig, chooser: _Chooser, stops: _Stops
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain engine: the library's ``generate`` with `chooser` as the only processor."""
    stops.prompt_len = batch["input_ids"].shape[1]
    # generate() fills every setting we leave unset from the model's own generation config
    # (a pretrained model's may sample, penalise repeats, force a minimum length...): swap in
    # the neutral library defaults so that _Chooser is the only logits processor.
    inner = unwrap(model)
    saved_config = inner.generation_config
    inner.generation_config = GenerationConfig()
    try:
        # eager even where the training loop compiled the layers (their graphs have no cache)
        with torch.compiler.set_stance("force_eager"):
            out = model.generate(
                **batch,
                generation_config=config,
                logits_processor=LogitsProcessorList([chooser]),
                stopping_criteria=StoppingCriteriaList([stops]),
            )
    finally:
        inner.generation_config = saved_config
    sequences_BT = out if isinstance(out, torch.Tensor) else out.sequences
    new_BN = sequences_BT[:, stops.prompt_len :].cpu()
    return new_BN, torch.stack(chooser.logprobs, 1).cpu()
