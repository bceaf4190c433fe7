"""Batches from the tiny backbone's processor: label masks, padding, mixed batches, scoring."""

from __future__ import annotations

import pytest
import torch

from mgsd import puzzles
from mgsd.model import prompts, support
from mgsd.model.batching import (
    IGNORE,
    Example,
    collate_generate,
    collate_score,
    collate_train,
    model_inputs,
    reply_logprobs,
    score_replies,
    text_ids,
)


@pytest.fixture(scope="module")
def examples(tiny_image_size):
    """An image example, a text-only example and an image example with a forced prefix."""
    fl, mb = puzzles.get("frozenlake"), puzzles.get("minibehaviour")
    s1, s2, s3 = fl.generate(3, 0), mb.generate(5, 1), fl.generate(5, 2)
    return [
        Example(
            prompts.student_messages("frozenlake", "compact"),
            prompts.reply_text("frozenlake", s1),
            fl.render(s1, tiny_image_size),
        ),
        Example(
            prompts.symbolic_messages("minibehaviour", s2, "instruct"),
            prompts.reply_text("minibehaviour", s2, "instruct"),
        ),
        Example(
            prompts.student_messages("frozenlake", "compact"),
            f"<answer>{fl.format_answer(fl.solve(s3))}</answer>",
            fl.render(s3, tiny_image_size),
            prefix=fl.describe(s3) + "\n",
        ),
    ]


def _logits(model, batch):
    with torch.no_grad():
        return model(**model_inputs(batch)).logits


def test_only_reply_tokens_and_end_carry_labels(tiny, examples):
    _, processor = tiny
    batch = collate_train(processor, examples)
    tok = processor.tokenizer
    special = {tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>")}
    end = tok.convert_tokens_to_ids("<|im_end|>")
    ids_BT, labels_BT, mask_BT = batch["input_ids"], batch["labels"], batch["attention_mask"]
    labelled_BT = labels_BT != IGNORE
    assert torch.equal(labels_BT[labelled_BT], ids_BT[labelled_BT])  # the model shifts itself
    assert not (labelled_BT & (mask_BT == 0)).any()  # never on padding
    for b, ex in enumerate(examples):
        labelled = ids_BT[b][labelled_BT[b]].tolist()
        assert labelled == text_ids(processor, ex.reply) + [end]
        assert not set(labelled) & special
        # the labelled span is the tail of the real tokens: prompt and prefix come first
        length = int(mask_BT[b].sum())
        assert labelled_BT[b].nonzero().flatten().tolist() == list(
            range(length - len(labelled), length)
        )
    prefix_ids = text_ids(processor, examples[2].prefix)
    real = ids_BT[2][: int(mask_BT[2].sum())].tolist()
    start = len(real) - len(text_ids(processor, examples[2].reply)) - 1
    assert real[start - len(prefix_ids) : start] == prefix_ids
    assert batch["pixel_values"].shape[0] == 2 * 16  # two pictures of 16 patches
    assert batch["mm_token_type_ids"].sum() == 2 * 4  # 4 image tokens each, nowhere else


def test_right_padding_and_mixed_batch_equal_single_forwards(tiny, examples):
    model, processor = tiny
    batch = collate_train(processor, examples)
    mask_BT = batch["attention_mask"]
    assert (mask_BT[:, 0] == 1).all() and (mask_BT.diff(dim=1) <= 0).all()  # ones, then zeros
    logits_BTV = _logits(model, batch)
    for b, ex in enumerate(examples):
        alone = collate_train(processor, [ex])
        n = alone["input_ids"].shape[1]
        assert torch.equal(batch["input_ids"][b, :n], alone["input_ids"][0])
        torch.testing.assert_close(logits_BTV[b, :n], _logits(model, alone)[0], atol=1e-5, rtol=0)


def test_generation_batch_is_left_padded_and_ends_with_the_header(tiny, examples):
    _, processor = tiny
    batch = collate_generate(processor, examples)
    mask_BT = batch["attention_mask"]
    assert (mask_BT[:, -1] == 1).all() and (mask_BT.diff(dim=1) >= 0).all()  # zeros, then ones
    header = text_ids(processor, "assistant\n")
    for b, ex in enumerate(examples):
        ids = batch["input_ids"][b].tolist()
        tail = header + text_ids(processor, ex.prefix)
        assert ids[-len(tail) :] == tail
    assert "labels" not in batch


def test_placeholder_and_image_must_agree(tiny, examples):
    _, processor = tiny
    no_image = Example(examples[0].messages, "x")
    with pytest.raises(ValueError, match="example 0: 1 image placeholders"):
        collate_train(processor, [no_image])
    with pytest.raises(ValueError, match="needs a reply"):
        collate_train(processor, [Example(examples[1].messages)])


def test_collate_score_logprobs_match_plain_forwards(tiny, examples):
    model, processor = tiny
    replies = [text_ids(processor, "size 3\nstart 0 0"), text_ids(processor, "<answer>U</answer>")]
    replies.append(replies[0] + replies[1])
    batch = collate_score(processor, examples, replies)
    assert batch["reply_mask"].sum(1).tolist() == [len(r) for r in replies]
    allowed_V = support.support_mask(processor.tokenizer, support.output_rows(model))
    logprobs_BR, valid_BR = score_replies(model, batch, allowed_V)
    full_BR, full_valid_BR = reply_logprobs(_logits(model, batch), batch, allowed_V)
    assert torch.equal(valid_BR, full_valid_BR)
    torch.testing.assert_close(logprobs_BR.detach(), full_BR, atol=1e-5, rtol=0)
    for b, (ex, reply) in enumerate(zip(examples, replies, strict=True)):
        prompt = collate_generate(processor, [ex])["input_ids"][0].tolist()
        ids_T = torch.tensor([prompt + reply])
        single = {"input_ids": ids_T, "attention_mask": torch.ones_like(ids_T)}
        if ex.image is not None:
            one = collate_generate(processor, [ex])
            single.update(pixel_values=one["pixel_values"], image_grid_thw=one["image_grid_thw"])
            single["mm_token_type_ids"] = torch.cat(
                [one["mm_token_type_ids"], torch.zeros(1, len(reply), dtype=torch.long)], 1
            )
        logits_TV = _logits(model, single)[0].clone()
        # the sampler's support, written out apart from mgsd.model.support
        tok = processor.tokenizer
        logits_TV[:, len(tok) :] = float("-inf")
        for name in ("<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"):
            logits_TV[:, tok.convert_tokens_to_ids(name)] = float("-inf")
        logits_TV[:, tok.convert_tokens_to_ids("<|video_pad|>")] = float("-inf")
        logp_TV = torch.log_softmax(logits_TV, -1)
        expected = [logp_TV[len(prompt) + t - 1, tok].item() for t, tok in enumerate(reply)]
        got = logprobs_BR[b, : len(reply)].tolist()
        assert got == pytest.approx(expected, abs=1e-5)
        assert valid_BR[b].sum() == len(reply)


def _pictures(tiny_image_size):
    out = []
    for i, name in enumerate(puzzles.NAMES):
        p = puzzles.get(name)
        for side in p.PAPER_LEVELS:  # the smallest and the largest side the paper evaluates
            state = p.generate(side, i + side)
            out.append(
                Example(
                    prompts.student_messages(name, "compact"),
                    prompts.reply_text(name, state),
                    p.render(state, tiny_image_size),
                )
            )
    return out


@pytest.mark.parametrize("collate", [collate_train, collate_generate])
def test_batched_pictures_equal_the_processors_loop(tiny, tiny_image_size, collate, monkeypatch):
    """Same-sized pictures go through `_batched_pictures` (one vectorised pass): the batch is
    exactly what the processor's per-picture path gives, tokens, types and pixels."""
    from mgsd.model import batching

    processor = tiny[1]
    examples = _pictures(tiny_image_size)
    examples.insert(2, Example(prompts.symbolic_messages("maze", puzzles.get("maze").generate(4, 9), "compact"), "x"))  # fmt: skip
    assert batching._batched_pictures(processor, [e.image for e in examples if e.image]) is not None
    fast = collate(processor, examples)
    monkeypatch.setattr(batching, "_batched_pictures", lambda *a: None)
    slow = collate(processor, examples)
    assert fast.keys() == slow.keys()
    for key in slow:
        assert fast[key].dtype == slow[key].dtype, key
        assert torch.equal(fast[key], slow[key]), key


def test_pictures_the_processor_would_resize_take_its_path(tiny, tiny_image_size):
    from mgsd.model import batching

    processor = tiny[1]
    fl = puzzles.get("frozenlake")
    picture = fl.render(fl.generate(4, 0), tiny_image_size)
    assert batching._batched_pictures(processor, [picture, picture]) is not None
    odd = picture.resize((tiny_image_size + 8, tiny_image_size))
    assert batching._batched_pictures(processor, [odd]) is None  # would be resized
    assert batching._batched_pictures(processor, [picture, odd]) is None  # sizes differ
