"""Examples to tensors: training batches, generation batches and reply-scoring batches.

An `Example` is chat messages (with at most one image placeholder), the picture (or None), an
optional target reply and an optional forced reply prefix. Every sequence is laid out as

    prompt (chat template + generation header) | forced prefix | reply tokens | <|im_end|>

where the prompt comes from the processor (image placeholders expanded, ``mm_token_type_ids``
built), and the prefix and the reply are tokenized separately and appended, so a reply is
exactly the token ids the model produces after the prefix.

- `collate_train`: right padding; ``labels`` = the reply tokens and the closing ``<|im_end|>``,
  -100 everywhere else (prompt, image, prefix and pad tokens); the model shifts them itself.
- `collate_generate`: left padding, ending with the generation header (+ forced prefix).
- `collate_score`: right padding, [prompt + prefix + given reply token ids] and ``reply_mask``
  marking exactly the reply positions; `reply_logits` forwards such a batch and packs the
  logits of every reply token as (B, R, V), restricted to the sampler's support
  (`mgsd.model.support`); `score_replies` gives ``log p(reply_t | prompt, reply_<t)`` (B, R),
  aligned with the given ids. Training and tests score replies through these alone.

Batches may mix text-only and image examples: only the examples with a picture contribute
``pixel_values`` / ``image_grid_thw`` (in batch order). Tensors stay on the CPU; use
`to_device`. Shapes: B batch, T tokens, R reply tokens, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from mgsd.model import support

IGNORE = -100
END_TOKEN = "<|im_end|>"
MODEL_KEYS = (
    "input_ids",
    "attention_mask",
    "labels",
    "pixel_values",
    "image_grid_thw",
    "mm_token_type_ids",
)


@dataclass(frozen=True)
class Example:
    """One conversation: `messages` (chat format) with ``{"type": "image"}`` where `image` goes.

    `reply` is the training target; `prefix` is forced text at the start of the reply
    (never labelled, never scored: e.g. the true state for the image_oracle_state condition);
    `end`: the target closes the turn with ``<|im_end|>`` (False: the reply is only the start
    of what the model should go on to say, e.g. the state before a plan).
    """

    messages: list[dict]
    reply: str | None = None
    image: Image.Image | None = None
    prefix: str = ""
    end: bool = True


def _image_slots(messages: list[dict]) -> int:
    slots = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            slots += sum(1 for item in content if item.get("type") == "image")
    return slots


def text_ids(processor: Any, text: str) -> list[int]:
    """Token ids of plain text (no special tokens added)."""
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def end_id(processor: Any) -> int:
    return processor.tokenizer.convert_tokens_to_ids(END_TOKEN)


def pad_id(processor: Any) -> int:
    tok = processor.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else end_id(processor)


def _encode_prompts(
    processor: Any, examples: Sequence[Example]
) -> tuple[list[list[int]], list[list[int]], dict[str, torch.Tensor]]:
    """Per example: prompt ids (+ forced prefix), their modality types; the vision tensors."""
    if not examples:
        raise ValueError("empty batch: give at least one example")
    for i, ex in enumerate(examples):
        slots, has_image = _image_slots(ex.messages), ex.image is not None
        if slots != int(has_image):
            raise ValueError(
                f"example {i}: {slots} image placeholders in the messages but "
                f"{'an image' if has_image else 'no image'} given (need one placeholder per image)"
            )
    texts = [
        processor.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False)
        for ex in examples
    ]
    images = [ex.image.convert("RGB") for ex in examples if ex.image is not None]
    pictures = _batched_pictures(processor, images)
    if pictures is None:
        encoded = processor(text=texts, images=images or None, padding=False)
    else:  # what the processor does, the pictures in one pass: expand, tokenize, mark
        pixel_values, grid_thw = pictures
        per_image = int(grid_thw[0].prod()) // processor.image_processor.merge_size**2
        texts = [t.replace(processor.image_token, processor.image_token * per_image) for t in texts]
        encoded = dict(processor.tokenizer(texts))
        encoded["mm_token_type_ids"] = processor.create_mm_token_type_ids(encoded["input_ids"])
        encoded.update(pixel_values=pixel_values, image_grid_thw=grid_thw)
    ids = [list(x) for x in encoded["input_ids"]]
    types = [list(x) for x in encoded.get("mm_token_type_ids") or [[0] * len(r) for r in ids]]
    for i, ex in enumerate(examples):
        prefix = text_ids(processor, ex.prefix)
        ids[i] += prefix
        types[i] += [0] * len(prefix)
    vision = {}
    if images:
        vision["pixel_values"] = torch.as_tensor(np.asarray(encoded["pixel_values"]))
        vision["image_grid_thw"] = torch.as_tensor(np.asarray(encoded["image_grid_thw"]))
    return ids, types, vision


def _batched_pictures(
    processor: Any, images: list[Image.Image]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(pixel_values, image_grid_thw) of same-sized pictures in one vectorised pass, equal to
    what the processor's per-picture loop gives (`Qwen2VLImageProcessorPil`, the scratch
    backbone's): rescale in float64, normalise in float32, patches in the processor's order;
    None where that would not be exact (another image processor, a picture it would resize,
    pictures of different sizes) and the processor must do it."""
    ip = getattr(processor, "image_processor", None)
    if not images or type(ip).__name__ != "Qwen2VLImageProcessorPil":
        return None
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    W, H = images[0].size
    patch, merge, temporal = ip.patch_size, ip.merge_size, ip.temporal_patch_size
    if any(im.size != (W, H) for im in images) or not (ip.do_rescale and ip.do_normalize):
        return None
    if ip.do_resize:
        size = ip.size
        target = smart_resize(H, W, patch * merge, size.shortest_edge, size.longest_edge)
        if target != (H, W):
            return None
    # a byte maps to one value per channel: the processor's float64 rescale, then its float32
    # normalisation, tabulated once for the 256 bytes and looked up for every pixel
    byte = (np.arange(256, dtype=np.float64) * ip.rescale_factor).astype(np.float32)
    mean, std = (np.broadcast_to(np.float32(v), 3)[:, None] for v in (ip.image_mean, ip.image_std))
    table_C256 = ((byte[None, :] - mean) / std).astype(np.float32)
    C = table_C256.shape[0]
    N, gh, gw = len(images), H // patch, W // patch
    x = np.stack([np.asarray(im) for im in images])  # (N, H, W, C) bytes
    # (N, gh/m, gw/m, m, m, C, p, p): the processor's patch order
    x = x.reshape(N, gh // merge, merge, patch, gw // merge, merge, patch, C)
    x = x.transpose(0, 1, 4, 2, 5, 7, 3, 6)
    values = table_C256.ravel()[x + (np.arange(C, dtype=np.int16) * 256)[:, None, None]]
    # the picture is repeated over the temporal patch, as the processor does for a still image
    values = np.broadcast_to(values[..., None, :, :], (*values.shape[:6], temporal, patch, patch))
    pixel_values = torch.from_numpy(values.reshape(N * gh * gw, C * temporal * patch * patch))
    return pixel_values, torch.tensor([[1, gh, gw]] * N, dtype=torch.long)


def _pad(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out_BT = torch.full((len(rows), width), value, dtype=torch.long)
    for b, row in enumerate(rows):
        if not row:
            continue
        row_T = torch.tensor(row, dtype=torch.long)
        if left:
            out_BT[b, width - len(row) :] = row_T
        else:
            out_BT[b, : len(row)] = row_T
    return out_BT


def _assemble(
    processor: Any,
    ids: list[list[int]],
    types: list[list[int]],
    vision: dict[str, torch.Tensor],
    left: bool = False,
) -> dict[str, torch.Tensor]:
    batch = {
        "input_ids": _pad(ids, pad_id(processor), left),
        "attention_mask": _pad([[1] * len(r) for r in ids], 0, left),
    }
    if vision:
        batch.update(vision)
        batch["mm_token_type_ids"] = _pad(types, 0, left)
    return batch


def collate_train(processor: Any, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Right-padded [prompt + prefix + reply (+ <|im_end|>)] with labels on the reply only."""
    ids, types, vision = _encode_prompts(processor, examples)
    labels = []
    for i, ex in enumerate(examples):
        if ex.reply is None:
            raise ValueError(f"example {i}: collate_train needs a reply (the training target)")
        reply = text_ids(processor, ex.reply) + ([end_id(processor)] if ex.end else [])
        labels.append([IGNORE] * len(ids[i]) + reply)
        ids[i] = ids[i] + reply
        types[i] = types[i] + [0] * len(reply)
    batch = _assemble(processor, ids, types, vision)
    batch["labels"] = _pad(labels, IGNORE)
    return batch


def collate_generate(processor: Any, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Left-padded prompts ending with the assistant header and the forced prefix, if any."""
    ids, types, vision = _encode_prompts(processor, examples)
    return _assemble(processor, ids, types, vision, left=True)


def collate_score(
    processor: Any, examples: Sequence[Example], reply_token_ids: Sequence[Sequence[int]]
) -> dict[str, torch.Tensor]:
    """Right-padded [prompt + prefix + given reply ids]; ``reply_mask`` (B, T) marks the reply."""
    if len(reply_token_ids) != len(examples):
        raise ValueError(
            f"collate_score: {len(reply_token_ids)} replies for {len(examples)} examples"
        )
    ids, types, vision = _encode_prompts(processor, examples)
    marks = []
    for i, reply in enumerate(reply_token_ids):
        reply = [int(t) for t in reply]
        marks.append([0] * len(ids[i]) + [1] * len(reply))
        ids[i] = ids[i] + reply
        types[i] = types[i] + [0] * len(reply)
    batch = _assemble(processor, ids, types, vision)
    batch["reply_mask"] = _pad(marks, 0).bool()
    return batch


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a batch the model's forward takes (drops ``reply_mask``)."""
    return {k: v for k, v in batch.items() if k in MODEL_KEYS}


def to_device(batch: dict, device: torch.device | str) -> dict:
    """The batch with its tensors moved to `device` (other values as they are)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def reply_positions(mask_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence index of every reply token, packed left (B, R), and which entries are real."""
    lengths_B = mask_BT.sum(1)
    start_B = mask_BT.int().argmax(1)
    steps_R = torch.arange(int(lengths_B.max()) if mask_BT.numel() else 0, device=mask_BT.device)
    valid_BR = steps_R[None, :] < lengths_B[:, None]
    pos_BR = torch.where(valid_BR, start_B[:, None] + steps_R[None, :], start_B[:, None])
    return pos_BR, valid_BR


def _gathered_logprobs(
    logits_BRV: torch.Tensor, tokens_BR: torch.Tensor, valid_BR: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    logprobs_BRV = torch.log_softmax(logits_BRV.float(), dim=-1)
    logprobs_BR = logprobs_BRV.gather(-1, tokens_BR[..., None]).squeeze(-1)
    return torch.where(valid_BR, logprobs_BR, 0), valid_BR


def reply_logprobs(
    logits_BTV: torch.Tensor, batch: dict[str, torch.Tensor], allowed_V: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(reply_t | prompt, reply_<t) over the support `allowed_V`, (B, R) float32, and its
    mask (B, R).

    `logits_BTV` are the full logits of a `collate_score` batch. Row b holds its reply's
    log-probs in order at [:len_b] (zeros after). The logit at position p - 1 predicts the
    token at p.
    """
    device = logits_BTV.device
    pos_BR, valid_BR = reply_positions(batch["reply_mask"].to(device))
    tokens_BR = batch["input_ids"].to(device).gather(1, pos_BR)
    src_BR = (pos_BR - 1).clamp(min=0)
    logits_BRV = logits_BTV.gather(1, src_BR[..., None].expand(-1, -1, logits_BTV.shape[-1]))
    return _gathered_logprobs(support.restrict(logits_BRV, allowed_V), tokens_BR, valid_BR)


@dataclass
class ReplyLogits:
    """What scores a `collate_score` batch, packed per reply token: shapes (B, R[, V]).

    `logits` predict reply token t at [:, t] and are restricted to the support (-inf outside
    it); `tokens` are the reply ids (0 off `valid`); `dead_mass` is the probability the raw
    logits put outside the support (`mgsd.model.support.dead_mass`).
    """

    logits: torch.Tensor  # (B, R, V)
    tokens: torch.Tensor  # (B, R)
    valid: torch.Tensor  # (B, R) bool
    dead_mass: torch.Tensor  # (B, R), no gradient

    def logprobs(self) -> torch.Tensor:
        """log p(token_t), (B, R) float32, 0 off `valid`; gradients flow."""
        return _gathered_logprobs(self.logits, self.tokens, self.valid)[0]


def reply_logits(
    model: Any, batch: dict[str, torch.Tensor], allowed_V: torch.Tensor
) -> ReplyLogits:
    """Forward a `collate_score` batch: the logits of every reply token over the support.

    Only the logits of the window of positions that predict some reply token are computed
    (``logits_to_keep`` as a 1-D index, which transformers >= 5.17 accepts), which matters for
    big vocabularies and long prompts. Gradients flow when enabled.
    """
    batch = to_device(batch, next(model.parameters()).device)
    pos_BR, valid_BR = reply_positions(batch["reply_mask"])
    tokens_BR = torch.where(valid_BR, batch["input_ids"].gather(1, pos_BR), 0)
    V = allowed_V.shape[0]
    if pos_BR.shape[1] == 0:
        empty = torch.zeros(pos_BR.shape, device=pos_BR.device)
        return ReplyLogits(empty[..., None].expand(-1, -1, V), tokens_BR, valid_BR, empty)
    lo = int(pos_BR[valid_BR].min()) - 1
    hi = int(pos_BR[valid_BR].max())
    window_K = torch.arange(lo, hi, device=pos_BR.device)
    logits_BKV = model(**model_inputs(batch), logits_to_keep=window_K, use_cache=False).logits
    if logits_BKV.shape[-1] != V:
        raise ValueError(f"the support has {V} ids but the model returns {logits_BKV.shape[-1]}")
    src_BR = (pos_BR - 1 - lo).clamp(0, hi - lo - 1)
    raw_BRV = logits_BKV.gather(1, src_BR[..., None].expand(-1, -1, V))
    with torch.no_grad():
        dead_BR = torch.where(valid_BR, support.dead_mass(raw_BRV, allowed_V), 0)
    return ReplyLogits(support.restrict(raw_BRV, allowed_V), tokens_BR, valid_BR, dead_BR)


def score_replies(
    model: Any, batch: dict[str, torch.Tensor], allowed_V: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(reply_t | prompt, reply_<t) over the support, (B, R), and the mask (B, R)."""
    scored = reply_logits(model, batch, allowed_V)
    return scored.logprobs(), scored.valid
