"""The vision tower's batched attention (`mgsd.model.vision`) does the library's maths."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from mgsd import puzzles
from mgsd.model import prompts
from mgsd.model.batching import Example, collate_train, model_inputs
from mgsd.model.load import load_model
from mgsd.model.vision import batch_same_size_attention


def _vision_attention(model):
    return [m for m in model.modules() if type(m).__name__ == "Qwen3VLVisionAttention"]


@pytest.fixture(scope="module")
def picture_batch(tiny_image_size):
    """Six picture examples of two puzzles (all pictures one size, as in the pipeline)."""
    out = []
    for name, level in (("frozenlake", 3), ("frozenlake", 4), ("maze", 3), ("maze", 4)) * 2:
        p = puzzles.get(name)
        s = p.generate(level, len(out))
        out.append(
            Example(
                prompts.student_messages(name, "compact"),
                prompts.reply_text(name, s),
                p.render(s, tiny_image_size),
            )
        )
    return out


def _loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**model_inputs(batch), use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads


def test_load_model_installs_the_batched_attention_on_every_vision_block(tiny_model_dir):
    model, _ = load_model(tiny_model_dir, device="cpu")
    blocks = model.model.visual.blocks
    assert [hasattr(b.attn, "_mgsd_per_picture") for b in blocks] == [True] * len(blocks)
    assert batch_same_size_attention(model) == 0  # installing twice changes nothing


def test_batched_attention_gives_the_library_logits_and_gradients(tiny_model_dir, picture_batch):
    batched, processor = load_model(tiny_model_dir, device="cpu")
    library = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    library.train()
    assert not any(hasattr(m, "_mgsd_per_picture") for m in _vision_attention(library))
    batch = collate_train(processor, picture_batch)
    logits_b, grads_b = _loss_and_grads(batched, batch)
    logits_l, grads_l = _loss_and_grads(library, batch)
    torch.testing.assert_close(logits_b, logits_l, rtol=1e-5, atol=1e-5)
    assert grads_b.keys() == grads_l.keys()
    visual = [n for n in grads_b if ".visual." in n]
    assert visual  # the vision tower is trained through the batched path
    for name in grads_b:
        torch.testing.assert_close(grads_b[name], grads_l[name], rtol=1e-4, atol=1e-6)


def test_pictures_of_different_sizes_take_the_per_picture_path(tiny_model_dir):
    """Unequal segments (pictures of two sizes) must not be reshaped into one grid."""
    model, _ = load_model(tiny_model_dir, device="cpu", trainable=False)
    attn = model.model.visual.blocks[0].attn
    dim = attn.qkv.in_features
    torch.manual_seed(0)
    x = torch.randn(16 + 4, dim)
    cu = torch.tensor([0, 16, 20], dtype=torch.int32)
    head = dim // attn.num_heads
    cos, sin = torch.ones(20, head), torch.zeros(20, head)
    got = attn(x, cu, position_embeddings=(cos, sin))
    want = attn._mgsd_per_picture(x, cu, position_embeddings=(cos, sin))
    torch.testing.assert_close(got, want)
    # and it is not the batched maths over one 20-patch picture
    whole = attn(x, torch.tensor([0, 20], dtype=torch.int32), position_embeddings=(cos, sin))
    assert not torch.allclose(got, whole)
