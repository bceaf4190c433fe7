"""Batched generation with per-token log-probs, stopping at the closed answer block.

`generate(model, processor, examples, max_new_tokens, ...)` runs ``model.generate`` (KV cache,
left padding from `collate_generate`) with one logits processor of ours, `_Chooser`, as the
only processor: it receives the raw logits of each step, picks the next token itself (argmax
when ``temperature == 0``, else a sample from softmax(logits / temperature) restricted to the
`top_p` nucleus, drawn from a private generator seeded by `seed`), records the log-prob of the
chosen token under the model's temperature-1 distribution (``log_softmax`` of the raw logits,
the quantity distillation compares with the teacher) and hands ``generate`` a one-hot score so
its greedy step takes that token. Structural special tokens (`BANNED_IN_REPLY`: chat and
vision markers) and ids past the tokenizer (padding rows of the embedding) are never chosen.

A sequence stops at ``<|im_end|>`` / ``<|endoftext|>`` (kept in its token ids) or, with
`stop_at_answer`, right after the token that closes ``</answer>``. A reply that never closes an
answer comes back with ``finished=False``; nothing here raises on model output. Token ids and
text exclude the prompt and the forced reply prefix; text is decoded without special tokens.
"""

from __future__ import annotations

import re
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

from mgsd.model.batching import Example, collate_generate, end_id, pad_id, to_device

CLOSE_ANSWER = re.compile(r"<\s*/\s*answer\s*>", re.IGNORECASE)
_TAIL_TOKENS = 16  # enough tokens to hold "</answer>" even split into single characters


@dataclass(frozen=True)
class Generation:
    """One reply: generated token ids, their log-probs (temperature 1), decoded text."""

    token_ids: list[int]
    text: str
    logprobs: list[float]
    finished: bool  # the reply closed an answer block


# Structural tokens a reply must never contain: an image placeholder in a sampled reply would
# break every later forward pass over [prompt + reply] (image tokens != image features).
BANNED_IN_REPLY = (
    "<|im_start|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def banned_ids(tokenizer: Any) -> list[int]:
    vocab = tokenizer.get_vocab()
    return sorted(vocab[t] for t in BANNED_IN_REPLY if t in vocab)


class _Chooser(LogitsProcessor):
    """Picks each next token and records its log-prob under the raw logits."""

    def __init__(
        self, temperature: float, top_p: float, seed: int | None, banned: list[int], n_tokens: int
    ):
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.banned, self.n_tokens = banned, n_tokens
        self.generator: torch.Generator | None = None
        self.logprobs: list[torch.Tensor] = []  # one (B,) per step

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

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        logits_BV = scores.float()
        allowed_BV = logits_BV.clone()
        allowed_BV[:, self.banned] = float("-inf")
        # rows past the tokenizer (Qwen3-VL pads 151669 tokens to 151936 rows) decode to nothing
        allowed_BV[:, self.n_tokens :] = float("-inf")
        chosen_B = allowed_BV.argmax(-1) if self.temperature == 0 else self._sample(allowed_BV)
        logprobs_BV = torch.log_softmax(logits_BV, dim=-1)
        self.logprobs.append(logprobs_BV.gather(1, chosen_B[:, None]).squeeze(1))
        forced_BV = torch.full_like(logits_BV, float("-inf"))
        return forced_BV.scatter(1, chosen_B[:, None], 0.0)


class _AnswerStop(StoppingCriteria):
    """Marks a row done once its generated text contains a closing answer tag."""

    def __init__(self, tokenizer: Any, prompt_len: int, batch_size: int):
        self.tokenizer, self.prompt_len = tokenizer, prompt_len
        vocab = tokenizer.get_vocab()
        # "</answer>" ends with ">": only rows whose last token holds one need decoding
        has_gt = torch.zeros(max(max(vocab.values()) + 1, len(tokenizer)), dtype=torch.bool)
        has_gt[[i for t, i in vocab.items() if ">" in t]] = True
        self.has_gt = has_gt
        self.stopped_at: list[int | None] = [None] * batch_size  # generated tokens at the stop

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        new_BN = input_ids[:, self.prompt_len :]
        n = new_BN.shape[1]
        done_B = torch.zeros(new_BN.shape[0], dtype=torch.bool, device=input_ids.device)
        candidates = self.has_gt.to(input_ids.device)[new_BN[:, -1]].nonzero().flatten()
        for b in candidates.tolist():
            tail = self.tokenizer.decode(new_BN[b, max(0, n - _TAIL_TOKENS) :].tolist())
            if CLOSE_ANSWER.search(tail):
                done_B[b] = True
                if self.stopped_at[b] is None:
                    self.stopped_at[b] = n
        return done_B


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


def generate(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop_at_answer: bool = True,
) -> list[Generation]:
    """Replies to `examples` in one batch; see the module docstring for the exact semantics."""
    if temperature < 0 or not 0 < top_p <= 1 or max_new_tokens < 1:
        raise ValueError(
            f"generate: need temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 1 "
            f"(got {temperature}, {top_p}, {max_new_tokens})"
        )
    device = next(model.parameters()).device
    batch = to_device(collate_generate(processor, examples), device)
    prompt_len = batch["input_ids"].shape[1]
    config = _generation_config(processor, max_new_tokens)
    tok = processor.tokenizer
    chooser = _Chooser(temperature, top_p, seed, banned_ids(tok), n_tokens=len(tok))
    stop = _AnswerStop(processor.tokenizer, prompt_len, len(examples))
    # generate() fills every setting we leave unset from the model's own generation config
    # (a pretrained model's may sample, penalise repeats, force a minimum length...): swap in
    # the neutral library defaults so that _Chooser is the only logits processor.
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved_config, was_training = inner.generation_config, model.training
    inner.generation_config = GenerationConfig()
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(
                **batch,
                generation_config=config,
                logits_processor=LogitsProcessorList([chooser]),
                stopping_criteria=StoppingCriteriaList([stop] if stop_at_answer else []),
            )
    finally:
        inner.generation_config = saved_config
        model.train(was_training)
    sequences_BT = out if isinstance(out, torch.Tensor) else out.sequences
    new_BN = sequences_BT[:, prompt_len:].cpu()
    logprobs_BN = torch.stack(chooser.logprobs, 1).cpu() if chooser.logprobs else None
    results = []
    for b in range(len(examples)):
        ids = new_BN[b].tolist()
        cut = len(ids) if stop.stopped_at[b] is None else stop.stopped_at[b]
        ends = [i for i, t in enumerate(ids[:cut]) if t in config.eos_token_id]
        cut = ends[0] + 1 if ends else cut
        text = processor.tokenizer.decode(ids[:cut], skip_special_tokens=True)
        logprobs = logprobs_BN[b, :cut].tolist() if logprobs_BN is not None else []
        results.append(
            Generation(ids[:cut], text, logprobs, finished=bool(CLOSE_ANSWER.search(text)))
        )
    return results
