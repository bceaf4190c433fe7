"""The static decode engine: a fixed-size KV cache and, on CUDA, one captured CUDA graph.

`static_decode` is what `mgsd.model.generate.generate` runs for Qwen3-VL models (its
``engine="static"``). It keeps the plain engine's semantics, token for token:

- prefill: one forward of the Hugging Face model over the left-padded prompts, with the
  position ids ``generate`` would build (M-RoPE over the picture, text positions that skip the
  padding); its keys and values are copied into preallocated (B, kv heads, L, head dim)
  buffers, L = prompt + new tokens rounded up to `LENGTH_BUCKET` so that one graph serves many
  batches;
- decode: one token per row and step through the text decoder, written here layer by layer
  over the model's own modules (so LoRA layers and autocast apply as in the model): rotary
  position ``start + step`` on all three M-RoPE axes (no picture token is ever decoded), the new
  key/value written at slot ``prompt + step``, grouped-query attention over the valid slots
  (left padding masked) reading each cached key/value once;
- the chooser (argmax / seeded sampling, log-prob under the raw logits) runs eagerly between
  steps on the step's logits, exactly as in the plain engine, so both engines draw the same
  random numbers in the same order.

On CUDA the decode step (embedding to logits) is captured once per (batch, L, dtype, weights)
and replayed: the step is hundreds of small kernels, and launching them one by one from Python
is what makes plain eager decoding slow. The stop test (end token, closed answer) is checked on
the host every `CHECK_EVERY` steps instead of every step; rows keep decoding until the check
and are cut at their true stop afterwards, so results do not depend on the interval.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb

LENGTH_BUCKET = 64  # cache lengths are rounded up to this, so graphs are reused across batches
CHECK_EVERY = 16  # decode steps between two host-side stop checks
COMPILE_ON_CUDA = True  # compile the layer step where graphs are captured (benchmarks turn it off)


def supports(model: Any) -> bool:
    """Whether `model` (possibly PEFT-wrapped) has the Qwen3-VL layout this engine decodes."""
    inner = _inner(model)
    lm = getattr(getattr(inner, "model", None), "language_model", None)
    return (
        lm is not None
        and hasattr(inner, "lm_head")
        and hasattr(inner.model, "get_rope_index")
        and all(hasattr(layer, "self_attn") and hasattr(layer, "mlp") for layer in lm.layers)
    )


def _inner(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass
class _Step:
    """Buffers of one decode shape and, on CUDA, the graph that advances them by one token."""

    key: tuple
    ids_B: torch.Tensor  # token fed at this step
    pos_B: torch.Tensor  # its rotary position
    slot: torch.Tensor  # (1,) cache slot it is written to
    valid_BL: torch.Tensor  # cache slots a query may attend to
    keys: list[torch.Tensor]  # per layer (B, kv heads, L, head dim)
    values: list[torch.Tensor]
    compiled: bool = False  # the layer step is torch.compile'd
    logits_BV: torch.Tensor | None = None  # output of the last step
    graph: torch.cuda.CUDAGraph | None = None


def _layer_step(
    layer: Any,
    h_B1D: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    slot: torch.Tensor,
    valid_BL: torch.Tensor,
) -> torch.Tensor:
    """One decoder layer for one new token per row, attending over the cache (grouped-query:
    each cached key/value is read once, never repeated per query head)."""
    attn = layer.self_attn
    x = layer.input_layernorm(h_B1D)
    B, hd = x.shape[0], attn.head_dim
    q = attn.q_norm(attn.q_proj(x).view(B, 1, -1, hd)).transpose(1, 2)  # (B, H, 1, hd)
    k = attn.k_norm(attn.k_proj(x).view(B, 1, -1, hd)).transpose(1, 2)  # (B, KV, 1, hd)
    v = attn.v_proj(x).view(B, 1, -1, hd).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    keys.index_copy_(2, slot, k.to(keys.dtype))
    values.index_copy_(2, slot, v.to(values.dtype))
    # query head h reads kv head h // groups (transformers' repeat_kv layout)
    q_BKGd = q.reshape(B, keys.shape[1], -1, hd).to(keys.dtype)
    scores_BKGL = torch.matmul(q_BKGd, keys.transpose(-1, -2)).float() * attn.scaling
    scores_BKGL = scores_BKGL.masked_fill(~valid_BL[:, None, None, :], float("-inf"))
    probs_BKGL = torch.softmax(scores_BKGL, dim=-1).to(values.dtype)
    out_B1X = torch.matmul(probs_BKGL, values).reshape(B, 1, -1).to(x.dtype)
    h_B1D = h_B1D + attn.o_proj(out_B1X)
    return h_B1D + layer.mlp(layer.post_attention_layernorm(h_B1D))


_COMPILED: dict[str, Callable] = {}


def _layer_fn(compiled: bool) -> Callable:
    """`_layer_step`, or its torch.compile'd version (one graph for all the identical layers:
    fused norms, rotary and softmax cut the kernel count of a step about threefold)."""
    if not compiled:
        return _layer_step
    if "layer" not in _COMPILED:
        _COMPILED["layer"] = torch.compile(_layer_step, dynamic=False)
    return _COMPILED["layer"]


def _advance(inner: Any, step: _Step) -> None:
    """One decode step: logits for `ids_B`, then the position, slot and mask move on by one."""
    lm = inner.model.language_model
    step.valid_BL.index_fill_(1, step.slot, True)
    h = lm.embed_tokens(step.ids_B[:, None])
    pos_3B1 = step.pos_B.view(1, -1, 1).expand(3, -1, -1)
    cos, sin = lm.rotary_emb(h, pos_3B1)
    layer_fn = _layer_fn(step.compiled)
    for i, layer in enumerate(lm.layers):
        h = layer_fn(layer, h, cos, sin, step.keys[i], step.values[i], step.slot, step.valid_BL)
    logits = inner.lm_head(lm.norm(h))[:, -1]
    if step.logits_BV is None:
        step.logits_BV = logits
    else:
        step.logits_BV.copy_(logits)
    step.pos_B.add_(1)
    step.slot.add_(1)


def _weights_key(inner: Any) -> tuple:
    """Identifies the weight storage a captured graph reads (reallocation means recapture)."""
    return tuple(p.data_ptr() for p in inner.parameters())


def _autocast_state(device: torch.device) -> tuple:
    if device.type != "cuda" or not torch.is_autocast_enabled("cuda"):
        return (False, None)
    return (True, torch.get_autocast_dtype("cuda"))


def _new_step(
    inner: Any, key: tuple, B: int, L: int, device: torch.device, compiled: bool
) -> _Step:
    text = inner.config.text_config
    kv_heads, hd = text.num_key_value_heads, text.head_dim
    dtype = inner.model.language_model.embed_tokens.weight.dtype
    autocast_on, autocast_dtype = _autocast_state(device)
    if autocast_on:
        dtype = autocast_dtype
    layers = text.num_hidden_layers
    return _Step(
        key=key,
        ids_B=torch.zeros(B, dtype=torch.long, device=device),
        pos_B=torch.zeros(B, dtype=torch.long, device=device),
        slot=torch.zeros(1, dtype=torch.long, device=device),
        valid_BL=torch.zeros(B, L, dtype=torch.bool, device=device),
        keys=[torch.zeros(B, kv_heads, L, hd, dtype=dtype, device=device) for _ in range(layers)],
        values=[torch.zeros(B, kv_heads, L, hd, dtype=dtype, device=device) for _ in range(layers)],
        compiled=compiled,
    )


def _capture(inner: Any, step: _Step) -> None:
    """Warm up on a side stream, then capture `_advance` (buffers are reset by the caller)."""
    autocast_on, autocast_dtype = _autocast_state(step.ids_B.device)
    # autocast's weight-cast cache must be off while capturing (torch.cuda.graph docs)
    ctx = (
        torch.autocast("cuda", dtype=autocast_dtype, cache_enabled=False)
        if autocast_on
        else contextlib.nullcontext()
    )
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), ctx:
        for _ in range(2):
            _advance(inner, step)
    torch.cuda.current_stream().wait_stream(side)
    step.graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(step.graph), ctx:
        _advance(inner, step)


def _get_step(
    inner: Any, B: int, L: int, device: torch.device, graphs: bool, compiled: bool
) -> _Step:
    """The cached buffers (and graph) for this shape, or new ones (replacing the old)."""
    key = (B, L, str(device), _autocast_state(device), graphs, compiled, _weights_key(inner))
    cached = getattr(inner, "_mgsd_decode_step", None)
    if cached is not None and cached.key == key:
        return cached
    inner._mgsd_decode_step = None  # free the old buffers before allocating new ones
    step = _new_step(inner, key, B, L, device, compiled)
    if graphs:
        _capture(inner, step)
    inner._mgsd_decode_step = step
    return step


def _prefill_positions(inner: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(4, B, P) position ids as ``generate`` builds them, and each row's next position (B,)."""
    mask_BP = batch["attention_mask"]
    text_BP = (mask_BP.long().cumsum(-1) - 1).masked_fill(mask_BP == 0, 0)
    if batch.get("image_grid_thw") is not None:
        rope_3BP, deltas_B1 = inner.model.get_rope_index(
            batch["input_ids"],
            mm_token_type_ids=batch["mm_token_type_ids"],
            image_grid_thw=batch["image_grid_thw"],
            attention_mask=mask_BP,
        )
    else:
        rope_3BP = text_BP[None].expand(3, -1, -1)
        deltas_B1 = torch.zeros_like(text_BP[:, :1])
    next_B = mask_BP.long().sum(-1) + deltas_B1[:, 0].to(mask_BP.device)
    return torch.cat([text_BP[None], rope_3BP.to(text_BP.device)], 0), next_B


def static_decode(
    model: Any,
    batch: dict[str, torch.Tensor],
    max_new_tokens: int,
    choose: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    all_done: Callable[[torch.Tensor], bool],
    graphs: bool | None = None,
    compiled: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """New token ids and their log-probs, both (B, N) on the CPU, N <= `max_new_tokens`.

    `choose(logits_BV) -> (ids_B, logprobs_B)` picks each token; `all_done(new_BN)` looks at
    the tokens so far (on the CPU) and says whether every row has stopped. `graphs` (default:
    on CUDA) captures the decode step as a CUDA graph; `compiled` (default: with graphs,
    unless `COMPILE_ON_CUDA` is off)
    compiles the layer step first.
    """
    inner = _inner(model)
    device = batch["input_ids"].device
    graphs = device.type == "cuda" if graphs is None else graphs
    compiled = (graphs and COMPILE_ON_CUDA) if compiled is None else compiled
    B, P = batch["input_ids"].shape
    L = -(-(P + max_new_tokens) // LENGTH_BUCKET) * LENGTH_BUCKET
    position_ids, next_B = _prefill_positions(inner, batch)
    step = _get_step(inner, B, L, device, graphs, compiled)

    # eager even where the training loop compiled the layers (their graphs have no KV cache)
    with torch.compiler.set_stance("force_eager"):
        out = inner(**batch, position_ids=position_ids, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    for i in range(len(step.keys)):
        step.keys[i].zero_()
        step.values[i].zero_()
        step.keys[i][:, :, :P].copy_(cache.layers[i].keys)
        step.values[i][:, :, :P].copy_(cache.layers[i].values)
    step.valid_BL.zero_()
    step.valid_BL[:, :P].copy_(batch["attention_mask"].bool())
    step.pos_B.copy_(next_B)
    step.slot.fill_(P)
    logits_BV = out.logits[:, -1]
    del out, cache

    ids_BN = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
    logprobs_BN = torch.zeros(B, max_new_tokens, dtype=torch.float32, device=device)
    checked = 0
    for t in range(max_new_tokens):
        ids_B, logprobs_B = choose(logits_BV)
        ids_BN[:, t] = ids_B
        logprobs_BN[:, t] = logprobs_B
        n = t + 1
        if n == max_new_tokens or n - checked >= CHECK_EVERY:
            checked = n
            if all_done(ids_BN[:, :n].cpu()):
                break
        step.ids_B.copy_(ids_B)
        if step.graph is not None:
            step.graph.replay()
        else:
            _advance(inner, step)
        logits_BV = step.logits_BV
    return ids_BN[:, :n].cpu(), logprobs_BN[:, :n].cpu()
