"""Pure tensor parts of batching: reply positions and the gathered log-probs (no model)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mgsd.model.batching import Example, collate_train, reply_logprobs, reply_positions


def _mask(rows: list[tuple[int, int]], width: int) -> torch.Tensor:
    """(start, length) per row -> (B, T) bool mask."""
    mask_BT = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, (start, length) in enumerate(rows):
        mask_BT[b, start : start + length] = True
    return mask_BT


def test_reply_positions_pack_each_reply_left():
    pos_BR, valid_BR = reply_positions(_mask([(2, 3), (4, 1), (1, 0)], 7))
    assert valid_BR.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    assert pos_BR[0].tolist() == [2, 3, 4] and pos_BR[1, 0] == 4


def test_reply_logprobs_is_the_shifted_log_softmax():
    torch.manual_seed(0)
    B, T, V = 3, 9, 11
    logits_BTV = torch.randn(B, T, V)
    input_ids_BT = torch.randint(0, V, (B, T))
    rows = [(3, 4), (5, 2), (1, 8)]
    batch = {"input_ids": input_ids_BT, "reply_mask": _mask(rows, T)}
    logprobs_BR, valid_BR = reply_logprobs(logits_BTV, batch, torch.ones(V, dtype=torch.bool))
    assert logprobs_BR.shape == (B, 8) and valid_BR.sum(1).tolist() == [4, 2, 8]
    logp_BTV = torch.log_softmax(logits_BTV, -1)
    for b, (start, length) in enumerate(rows):
        for r in range(length):
            p = start + r
            expected = logp_BTV[b, p - 1, input_ids_BT[b, p]]
            assert logprobs_BR[b, r].item() == pytest.approx(expected.item(), abs=1e-6)
        assert (logprobs_BR[b, length:] == 0).all()


def test_reply_logprobs_carry_gradients():
    logits_BTV = torch.randn(1, 4, 5, requires_grad=True)
    batch = {"input_ids": torch.tensor([[0, 1, 2, 3]]), "reply_mask": _mask([(2, 2)], 4)}
    logprobs_BR, _ = reply_logprobs(logits_BTV, batch, torch.ones(5, dtype=torch.bool))
    logprobs_BR.sum().backward()
    assert logits_BTV.grad[0, 1:3].abs().sum() > 0 and logits_BTV.grad[0, [0, 3]].abs().sum() == 0


def test_examples_are_checked_before_tokenizing():
    image = Image.new("RGB", (8, 8))
    text_only = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    with pytest.raises(ValueError, match="empty batch"):
        collate_train(None, [])
    with pytest.raises(ValueError, match="example 0: 0 image placeholders .* an image given"):
        collate_train(None, [Example(text_only, "x", image)])
