"""A tiny scratch backbone (~0.2 M parameters), built once per test session.

`tiny_model_dir` is a complete Hugging Face folder (built by `mgsd.model.scratch`); tests that
change weights load their own copy with `load_model(tiny_model_dir)` (tens of milliseconds).
Pictures are `TINY_IMAGE_SIZE` square: 16 patches, 4 image tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mgsd.config import ScratchConfig

TINY_IMAGE_SIZE = 64
TINY_SCRATCH = ScratchConfig(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    intermediate_size=128,
    mrope_section=(4, 6, 6),
    vocab_size=384,
    vision_depth=2,
    vision_hidden_size=32,
    vision_num_heads=2,
    vision_intermediate_size=64,
    patch_size=16,
    spatial_merge_size=2,
    deepstack_visual_indexes=(0,),
    num_position_embeddings=16,
    seed=0,
)


@pytest.fixture(scope="session")
def tiny_scratch_config() -> ScratchConfig:
    return TINY_SCRATCH


@pytest.fixture(scope="session")
def tiny_image_size() -> int:
    return TINY_IMAGE_SIZE


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mgsd.model.scratch import build_scratch

    return build_scratch(TINY_SCRATCH, TINY_IMAGE_SIZE, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny(tiny_model_dir: Path):
    """(model, processor) shared by read-only tests: never train or modify it."""
    from mgsd.model.load import load_model

    return load_model(tiny_model_dir, device="cpu", trainable=False)


@pytest.fixture(scope="module")
def one_thread_module():
    """One torch thread for a whole module (`pytest.mark.usefixtures`): exact float results, and
    no waiting on the other threads of a small shared host."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
