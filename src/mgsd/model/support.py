"""The ids a reply may contain: one support for the sampler and for every log-prob of training.

The sampler (`mgsd.model.generate`) never draws a structural token (`BANNED_IN_REPLY`: chat and
vision markers; an image placeholder in a reply would break every later forward pass over it)
nor an id past the tokenizer (embedding rows that decode to nothing: Qwen3-VL has 151,936 rows
for fewer tokens, and a scratch backbone may have padding rows too). Training must normalise
over exactly the same ids. If the trainer's softmax also spans ids the sampler cannot draw, each
negative advantage of the sampled-token estimator raises their logits (the gradient of
``-A log p(y)`` on another id u is ``A p(u)``) and nothing ever lowers them, because they are
never sampled: the student drifts onto tokens it can never emit, and the log-prob of its own
samples falls below ``-log(len(tokenizer))``.

So every log-prob that sampling records, that distillation compares or differentiates (student,
teacher, the exact KL) or that a log reports goes through `restrict`: ids outside the support
get -inf before the log-softmax. `dead_mass` measures what the raw, unrestricted model puts
outside the support: the drift monitor (0 for the restricted distribution by construction).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

BANNED_IN_REPLY = (
    "<|im_start|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def banned_ids(tokenizer: Any) -> list[int]:
    """Ids of the structural tokens a reply must never contain."""
    vocab = tokenizer.get_vocab()
    return sorted(vocab[t] for t in BANNED_IN_REPLY if t in vocab)


def support_mask(tokenizer: Any, rows: int, device: torch.device | str | None = None) -> Tensor:
    """(V,) bool over the `rows` output rows of a model: True where the sampler may draw."""
    allowed_V = torch.zeros(rows, dtype=torch.bool)
    allowed_V[: min(len(tokenizer), rows)] = True
    allowed_V[[i for i in banned_ids(tokenizer) if i < rows]] = False
    return allowed_V.to(device) if device is not None else allowed_V


def output_rows(model: Any) -> int:
    """The number of logits a model's forward returns per position."""
    return int(model.get_output_embeddings().weight.shape[0])


def restrict(logits_V: Tensor, allowed_V: Tensor) -> Tensor:
    """`logits` with -inf outside the support (last dim), so any softmax is over the support."""
    return logits_V.masked_fill(~allowed_V, float("-inf"))


def dead_mass(raw_logits_V: Tensor, allowed_V: Tensor) -> Tensor:
    """The probability the unrestricted softmax of `raw_logits` puts outside the support.

    Shape: the logits' leading dimensions. Computed from two log-sum-exps (no softmax over V is
    kept), in float32.
    """
    raw_V = raw_logits_V.float()
    dead = (~allowed_V).nonzero().squeeze(1)
    if dead.numel() == 0:
        return raw_V.new_zeros(raw_V.shape[:-1])
    lse_dead = torch.logsumexp(raw_V.index_select(-1, dead), dim=-1)
    return torch.exp(lse_dead - torch.logsumexp(raw_V, dim=-1))
