"""The vision tower's attention over a batch of same-sized pictures, in one call.

Qwen3-VL's vision blocks (transformers 5.x) attend within each picture. With any attention
implementation but flash-attention they split the packed patches picture by picture and call
the attention kernel once per picture and block: a batch of 64 pictures through a 4-block tower
is 256 kernel calls forward and as many backward, which made the picture-heavy stages of the
scratch presets (stage 0, grounding, evaluation's prefill) launch-bound on a GPU. Every picture
of this pipeline has the same size (`data.image_size`), so the packed patches are a (pictures,
patches) grid and one batched `scaled_dot_product_attention` does the same maths.

`batch_same_size_attention(model)` installs that forward on every vision attention module of a
loaded model; a batch whose pictures differ in size (a model used outside this pipeline) takes
the library's own per-picture path, unchanged. `mgsd.model.load.load_model` calls it.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F

try:  # the rotary helper of the module this forward replaces
    from transformers.models.qwen3_vl.modeling_qwen3_vl import (
        Qwen3VLVisionAttention,
        apply_rotary_pos_emb_vision,
    )
except ImportError:  # pragma: no cover - a transformers without Qwen3-VL: nothing to patch
    Qwen3VLVisionAttention = None


def _batched_forward(
    self: Any,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_seqlen: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()  # one host sync, as the library's split
    if (self.training and self.attention_dropout) or len(set(lengths)) != 1:
        return self._mgsd_per_picture(
            hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kwargs
        )
    S = hidden_states.shape[0]  # all patches of all pictures, packed
    N, L = len(lengths), lengths[0]
    q_SHD, k_SHD, v_SHD = (
        self.qkv(hidden_states).reshape(S, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    )
    cos, sin = position_embeddings
    q_SHD, k_SHD = apply_rotary_pos_emb_vision(q_SHD, k_SHD, cos, sin)
    q_NHLD, k_NHLD, v_NHLD = (
        x.reshape(N, L, self.num_heads, -1).transpose(1, 2) for x in (q_SHD, k_SHD, v_SHD)
    )
    out_NHLD = F.scaled_dot_product_attention(q_NHLD, k_NHLD, v_NHLD, scale=self.scaling)
    return self.proj(out_NHLD.transpose(1, 2).reshape(S, -1))


def batch_same_size_attention(model: torch.nn.Module) -> int:
    """Give every Qwen3-VL vision attention module of `model` the batched forward; returns how
    many. Flash-attention models already attend over the packed batch in one call: left as is."""
    if Qwen3VLVisionAttention is None:
        return 0
    done = 0
    for module in model.modules():
        if not isinstance(module, Qwen3VLVisionAttention) or hasattr(module, "_mgsd_per_picture"):
            continue
        if "flash" in str(getattr(module.config, "_attn_implementation", "")):
            continue
        module._mgsd_per_picture = module.forward
        module.forward = types.MethodType(_batched_forward, module)
        done += 1
    return done
