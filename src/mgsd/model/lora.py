"""LoRA on the language model (peft), frozen vision tower, the merge back to a plain model, and
the compiled layers of a training stage (`compile_layers`).

`target_modules="all-linear"` also matches the vision tower's linear layers, so the vision tower
is excluded by name (`.*visual.*`) unless the stage trains it.
"""

from __future__ import annotations

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

from mgsd.config import LoraConfig

VISION = "visual"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (the model itself when it has none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def freeze_vision(model: torch.nn.Module) -> int:
    """Stop gradients into the vision tower; returns the number of frozen tensors."""
    frozen = 0
    for name, p in model.named_parameters():
        if f"{VISION}." in name:
            p.requires_grad_(False)
            frozen += 1
    return frozen


def compile_layers(model: torch.nn.Module) -> int:
    """torch.compile every decoder layer and vision block in place; returns how many.

    The identical layers share one compiled graph per kind (their forwards run without a KV
    cache: training forwards pass ``use_cache=False``). Generation runs its prefill eagerly
    (`mgsd.model.decode`), so a compiled model still decodes with the static engine.
    """
    inner = unwrap(model)
    layers = [*inner.model.language_model.layers, *inner.model.visual.blocks]
    for layer in layers:
        layer.compile()
    return len(layers)


def apply_lora(model: torch.nn.Module, cfg: LoraConfig, train_vision: bool = False):
    """Wrap `model` with LoRA adapters; only the adapters (and nothing else) are trainable."""
    peft_cfg = PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        exclude_modules=None if train_vision else rf".*{VISION}.*",
        bias="none",
    )
    return get_peft_model(model, peft_cfg)


def merge_lora(model) -> torch.nn.Module:
    """Fold the adapters into the weights and drop the peft wrapper."""
    return model.merge_and_unload()
