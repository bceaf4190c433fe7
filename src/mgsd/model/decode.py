"""The static decode engine: fused decode weights, a fixed-size KV cache and CUDA graphs.

`static_decode` is what `mgsd.model.generate.generate` runs for Qwen3-VL models (its
``engine="static"``). It keeps the plain engine's semantics, token for token:

- prefill: one forward of the Hugging Face model over the left-padded prompts, with the
  position ids ``generate`` would build (M-RoPE over the picture, text positions that skip the
  padding); its keys and values are copied into preallocated (B, kv heads, L, head dim)
  buffers, L = prompt + new tokens rounded up to `LENGTH_BUCKET` so that one graph serves many
  batches;
- decode: one token per row and step through the text decoder, written here over the weights
  the model's own modules apply (`_DecodeWeights`: a LoRA layer's base weight plus its active
  adapters; q/k/v and gate/up concatenated so that each is one matrix product; cast once per
  call to the autocast dtype when the model runs under autocast), with the modules' arithmetic
  in the same dtypes (norms in float32, residual stream in the model's dtype): rotary position
  ``start + step`` on all three M-RoPE axes (no picture token is ever decoded), the new
  key/value written at slot ``prompt + step``, grouped-query attention over the slots filled so
  far (`SPAN`-rounded; left padding masked);
- the chooser (argmax / seeded sampling, log-prob under the raw logits) runs eagerly between
  steps on the step's logits, exactly as in the plain engine, so both engines draw the same
  random numbers in the same order.

On CUDA the decode step (embedding to logits) is captured as CUDA graphs, one per attention
span, once per (batch, L, dtype, weight storage), and replayed: the step is hundreds of small
kernels, and launching them one by one from Python is what makes plain eager decoding slow.
The layer's two halves around attention are torch.compile'd (one graph each, shared by the
identical layers). The stop test (end token, closed answer) is checked on the host every
`CHECK_EVERY` steps instead of every step; rows keep decoding until the check and are cut at
their true stop afterwards, so results do not depend on the interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb

from mgsd.model.lora import unwrap

LENGTH_BUCKET = 64  # cache lengths are rounded up to this, so graphs are reused across batches
SPAN = 64  # attention reads the cache up to the filled slots rounded up to this
CHECK_EVERY = 16  # decode steps between two host-side stop checks

_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def supports(model: Any) -> bool:
    """Whether `model` (possibly PEFT-wrapped) has the Qwen3-VL layout this engine decodes:
    bias-free projections, plain or with plain LoRA adapters (no DoRA, no LoRA bias)."""
    inner = unwrap(model)
    lm = getattr(getattr(inner, "model", None), "language_model", None)
    if lm is None or not hasattr(inner, "lm_head") or not hasattr(inner.model, "get_rope_index"):
        return False
    try:
        for layer in lm.layers:
            attn, mlp = layer.self_attn, layer.mlp
            linears = [getattr(attn, n) for n in _PROJECTIONS] + [getattr(mlp, n) for n in _MLP]
            if not (hasattr(attn, "q_norm") and all(_plain(x) for x in linears)):
                return False
    except AttributeError:
        return False
    silu = getattr(inner.config.get_text_config(), "hidden_act", None) == "silu"
    return silu and _plain(inner.lm_head)


def _plain(linear: Any) -> bool:
    """A bias-free linear layer, or a PEFT LoRA layer adding plain B @ A adapters to one."""
    if hasattr(linear, "base_layer"):
        plain_lora = hasattr(linear, "lora_A") and hasattr(linear, "get_delta_weight")
        extras = [*getattr(linear, "use_dora", {}).values(), *getattr(linear, "lora_bias", {}).values()]  # fmt: skip
        return plain_lora and not any(extras) and _plain(linear.get_base_layer())
    return isinstance(linear, torch.nn.Linear) and linear.bias is None


def _weight(linear: Any) -> torch.Tensor:
    """The weight `linear` applies in eval mode (PEFT LoRA: base + active unmerged adapters)."""
    if not hasattr(linear, "base_layer"):
        return linear.weight
    w = linear.get_base_layer().weight
    if linear.disable_adapters or linear.merged:
        return w
    for name in linear.active_adapters:
        if name in linear.lora_A:
            w = w + linear.get_delta_weight(name).to(w.dtype)
    return w


@dataclass
class _DecodeWeights:
    """What a decode step reads, in the compute dtype: per layer (input norm, q|k|v, q norm,
    k norm, o, post-attention norm, gate|up, down), the final norm and the output head.

    Norm weights are the modules' own; a linear weight is the module's parameter itself where
    it already is what the step needs (plain layer, compute dtype), else a buffer that
    `refresh` rewrites from the modules at every call (concatenations, LoRA sums, casts).
    """

    layers: list[tuple[torch.Tensor, ...]]
    final_norm: torch.Tensor
    head: torch.Tensor
    fills: list[tuple[torch.Tensor, list[Any]]] = field(default_factory=list)  # buffer, modules

    @classmethod
    def build(cls, inner: Any, dtype: torch.dtype) -> _DecodeWeights:
        fills: list[tuple[torch.Tensor, list[Any]]] = []

        def matrix(*linears: Any) -> torch.Tensor:
            weights = [_weight(x) for x in linears]
            if len(weights) == 1 and weights[0].dtype == dtype and not hasattr(linears[0], "base_layer"):  # fmt: skip
                return weights[0]  # the parameter itself: always current
            rows = sum(w.shape[0] for w in weights)
            buffer = torch.empty(rows, weights[0].shape[1], dtype=dtype, device=weights[0].device)
            fills.append((buffer, list(linears)))
            return buffer

        layers = []
        for layer in inner.model.language_model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            layers.append((
                layer.input_layernorm.weight,
                matrix(attn.q_proj, attn.k_proj, attn.v_proj),
                attn.q_norm.weight,
                attn.k_norm.weight,
                matrix(attn.o_proj),
                layer.post_attention_layernorm.weight,
                matrix(mlp.gate_proj, mlp.up_proj),
                matrix(mlp.down_proj),
            ))  # fmt: skip
        lm = inner.model.language_model
        return cls(layers, lm.norm.weight, matrix(inner.lm_head), fills)

    def refresh(self) -> None:
        """Rewrites every buffer from the modules' current weights (in place: graphs read it);
        LoRA sums in the weights' own dtype, whatever autocast the caller runs under."""
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            self._refresh()

    def _refresh(self) -> None:
        for buffer, linears in self.fills:
            row = 0
            for linear in linears:
                w = _weight(linear)
                buffer[row : row + w.shape[0]].copy_(w)
                row += w.shape[0]


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen3-VL's RMSNorm: statistics in float32, scaled in the input dtype."""
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def _before_attention(
    h_B1D: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    slot: torch.Tensor,
    norm: torch.Tensor,
    qkv: torch.Tensor,
    q_norm: torch.Tensor,
    k_norm: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Norm, q|k|v projection, q/k norms and rotary; writes k and v at `slot`; returns q
    (B, heads, 1, head dim) in the cache dtype."""
    B, KV, _, hd = h_B1D.shape[0], keys.shape[1], keys.shape[2], keys.shape[3]
    x = _rms_norm(h_B1D, norm, eps)
    q, k, v = torch.matmul(x.to(qkv.dtype), qkv.t()).split([qkv.shape[0] - 2 * KV * hd, KV * hd, KV * hd], -1)  # fmt: skip
    q = _rms_norm(q.view(B, 1, -1, hd), q_norm, eps).transpose(1, 2)
    k = _rms_norm(k.view(B, 1, KV, hd), k_norm, eps).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    keys.index_copy_(2, slot, k.to(keys.dtype))
    values.index_copy_(2, slot, v.view(B, 1, KV, hd).transpose(1, 2).to(values.dtype))
    return q.to(keys.dtype)


def _after_attention(
    h_B1D: torch.Tensor,
    attn_B1X: torch.Tensor,
    o: torch.Tensor,
    norm: torch.Tensor,
    gate_up: torch.Tensor,
    down: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Output projection and residual, then the gated MLP and its residual."""
    h_B1D = h_B1D + torch.matmul(attn_B1X.to(o.dtype), o.t())
    x = _rms_norm(h_B1D, norm, eps)
    gate, up = torch.matmul(x.to(gate_up.dtype), gate_up.t()).chunk(2, -1)
    return h_B1D + torch.matmul(F.silu(gate) * up, down.t())


_COMPILED: dict[str, Callable] = {}


def _halves(compiled: bool) -> tuple[Callable, Callable]:
    """The two layer halves, or their torch.compile'd versions (fused norms, rotary and
    activation; attention between them stays eager, its span changes along the reply)."""
    if not compiled:
        return _before_attention, _after_attention
    if not _COMPILED:
        _COMPILED["before"] = torch.compile(_before_attention, dynamic=False)
        _COMPILED["after"] = torch.compile(_after_attention, dynamic=False)
    return _COMPILED["before"], _COMPILED["after"]


@dataclass
class _Step:
    """Buffers of one decode shape and, on CUDA, the graphs that advance them by one token."""

    key: tuple
    weights: _DecodeWeights
    eps: float
    scaling: float
    ids_B: torch.Tensor  # token fed at this step
    pos_B: torch.Tensor  # its rotary position
    slot: torch.Tensor  # (1,) cache slot it is written to
    valid_BL: torch.Tensor  # cache slots a query may attend to
    keys: list[torch.Tensor]  # per layer (B, kv heads, L, head dim)
    values: list[torch.Tensor]
    compiled: bool = False  # the layer halves are torch.compile'd
    logits_BV: torch.Tensor | None = None  # output of the last step
    graphs: dict[int, torch.cuda.CUDAGraph] = field(default_factory=dict)  # by attention span


def _advance(inner: Any, step: _Step, span: int) -> None:
    """One decode step attending over the first `span` cache slots: logits for `ids_B`, then
    the position, slot and mask move on by one."""
    lm = inner.model.language_model
    step.valid_BL.index_fill_(1, step.slot, True)
    h = lm.embed_tokens(step.ids_B[:, None])
    pos_3B1 = step.pos_B.view(1, -1, 1).expand(3, -1, -1)
    cos, sin = lm.rotary_emb(h, pos_3B1)
    before, after = _halves(step.compiled)
    # one additive mask per step, not one boolean-to-float conversion per layer
    bias_B11S = torch.zeros_like(step.valid_BL[:, None, None, :span], dtype=step.keys[0].dtype)
    bias_B11S.masked_fill_(~step.valid_BL[:, None, None, :span], float("-inf"))
    for w, keys, values in zip(step.weights.layers, step.keys, step.values, strict=True):
        norm, qkv, q_norm, k_norm, o, post_norm, gate_up, down = w
        q = before(h, cos, sin, keys, values, step.slot, norm, qkv, q_norm, k_norm, step.eps)
        out = F.scaled_dot_product_attention(
            q, keys[:, :, :span], values[:, :, :span], attn_mask=bias_B11S,
            scale=step.scaling, enable_gqa=True,
        )  # fmt: skip
        out_B1X = out.transpose(1, 2).reshape(h.shape[0], 1, -1)
        h = after(h, out_B1X, o, post_norm, gate_up, down, step.eps)
    head = step.weights.head
    logits = torch.matmul(_rms_norm(h, step.weights.final_norm, step.eps).to(head.dtype), head.t())
    if step.logits_BV is None:
        step.logits_BV = logits[:, -1]
    else:
        step.logits_BV.copy_(logits[:, -1])
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
    attn = inner.model.language_model.layers[0].self_attn
    return _Step(
        key=key,
        weights=_DecodeWeights.build(inner, dtype),
        eps=inner.model.language_model.norm.variance_epsilon,
        scaling=attn.scaling,
        ids_B=torch.zeros(B, dtype=torch.long, device=device),
        pos_B=torch.zeros(B, dtype=torch.long, device=device),
        slot=torch.zeros(1, dtype=torch.long, device=device),
        valid_BL=torch.zeros(B, L, dtype=torch.bool, device=device),
        keys=[torch.zeros(B, kv_heads, L, hd, dtype=dtype, device=device) for _ in range(layers)],
        values=[torch.zeros(B, kv_heads, L, hd, dtype=dtype, device=device) for _ in range(layers)],
        compiled=compiled,
    )


def _capture(inner: Any, step: _Step) -> None:
    """Warm up on a side stream, then capture `_advance` once per attention span (buffers are
    reset by the caller; the graphs share one memory pool, they never run at once)."""
    L = step.valid_BL.shape[1]
    step.valid_BL[:, 0] = True  # warm-up steps attend somewhere
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for span in range(SPAN, L + SPAN, SPAN):
            _advance(inner, step, min(span, L))
    torch.cuda.current_stream().wait_stream(side)
    pool = torch.cuda.graph_pool_handle()
    for span in range(SPAN, L + SPAN, SPAN):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            _advance(inner, step, min(span, L))
        step.graphs[min(span, L)] = graph


def _get_step(
    inner: Any, B: int, L: int, device: torch.device, graphs: bool, compiled: bool
) -> _Step:
    """The cached buffers (and graphs) for this shape, or new ones (replacing the old)."""
    key = (B, L, str(device), _autocast_state(device), graphs, compiled, _weights_key(inner))
    cached = getattr(inner, "_mgsd_decode_step", None)
    if cached is not None and cached.key == key:
        cached.weights.refresh()
        return cached
    inner._mgsd_decode_step = None  # free the old buffers before allocating new ones
    step = _new_step(inner, key, B, L, device, compiled)
    step.weights.refresh()
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


def lap(timings: dict[str, float] | None, name: str, since: float, device: torch.device) -> float:
    """Adds the seconds since `since` to ``timings[name]`` once the device has caught up, and
    returns the time now (nothing at all when `timings` is None)."""
    if timings is None:
        return since
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + now - since
    return now


def static_decode(
    model: Any,
    batch: dict[str, torch.Tensor],
    max_new_tokens: int,
    choose: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    all_done: Callable[[torch.Tensor], bool],
    graphs: bool | None = None,
    compiled: bool | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """New token ids and their log-probs, both (B, N) on the CPU, N <= `max_new_tokens`.

    `choose(logits_BV) -> (ids_B, logprobs_B)` picks each token; `all_done(new_BN)` looks at
    the tokens so far (on the CPU) and says whether every row has stopped. `graphs` (default:
    on CUDA) captures the decode step as CUDA graphs; `compiled` (default: with graphs) compiles the
    layer halves first. `timings`, if given, receives
    the seconds spent in "setup" (weights, buffers, graphs), "prefill" and "decode" (the
    device is synchronised at each boundary).
    """
    inner = unwrap(model)
    device = batch["input_ids"].device
    graphs = device.type == "cuda" if graphs is None else graphs
    compiled = graphs if compiled is None else compiled
    B, P = batch["input_ids"].shape
    L = -(-(P + max_new_tokens) // LENGTH_BUCKET) * LENGTH_BUCKET
    t0 = time.perf_counter()
    position_ids, next_B = _prefill_positions(inner, batch)
    step = _get_step(inner, B, L, device, graphs, compiled)
    t0 = lap(timings, "setup", t0, device)

    # eager even where the training loop compiled the layers (their graphs have no KV cache)
    with torch.compiler.set_stance("force_eager"):
        out = inner(**batch, position_ids=position_ids, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    for i in range(len(step.keys)):
        step.keys[i][:, :, :P].copy_(cache.layers[i].keys)
        step.values[i][:, :, :P].copy_(cache.layers[i].values)
        step.keys[i][:, :, P:].zero_()  # masked slots still enter attention as 0 * value
        step.values[i][:, :, P:].zero_()
    step.valid_BL.zero_()
    step.valid_BL[:, :P].copy_(batch["attention_mask"].bool())
    step.pos_B.copy_(next_B)
    step.slot.fill_(P)
    logits_BV = out.logits[:, -1]
    del out, cache
    t0 = lap(timings, "prefill", t0, device)

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
        span = min(L, -(-(P + n) // SPAN) * SPAN)  # slots 0 .. P + t are filled after the write
        if step.graphs:
            step.graphs[span].replay()
        else:
            _advance(inner, step, span)
        logits_BV = step.logits_BV
    lap(timings, "decode", t0, device)
    return ids_BN[:, :n].cpu(), logprobs_BN[:, :n].cpu()
