"""Generation on the tiny backbone: determinism, left padding, log-probs, stopping."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from mgsd import puzzles
from mgsd.model import prompts, support
from mgsd.model.batching import (
    Example,
    collate_score,
    collate_train,
    end_id,
    score_replies,
    text_ids,
)
from mgsd.model.generate import _Stops, generate
from mgsd.model.load import load_model
from mgsd.model.support import banned_ids

LOGPROB_TOL = 1e-4  # fp32 on CPU: KV-cached decoding vs one full forward


@pytest.fixture(scope="module")
def examples(tiny_image_size):
    """Prompts of different lengths, with and without picture and forced prefix."""
    fl, mz = puzzles.get("frozenlake"), puzzles.get("maze")
    s1, s2, s3 = fl.generate(4, 0), mz.generate(3, 1), fl.generate(6, 2)
    return [
        Example(
            prompts.student_messages("frozenlake", "compact"), image=fl.render(s1, tiny_image_size)
        ),
        Example(prompts.symbolic_messages("maze", s2, "compact")),
        Example(
            prompts.student_messages("frozenlake", "compact"),
            image=fl.render(s3, tiny_image_size),
            prefix=fl.describe(s3) + "\n",
        ),
        Example(prompts.symbolic_messages("frozenlake", s3, "instruct", fl.solve(s3))),
    ]


def allowed(model, processor) -> torch.Tensor:
    return support.support_mask(processor.tokenizer, support.output_rows(model))


def test_greedy_is_deterministic_and_batch_equals_one_by_one(tiny, examples):
    model, processor = tiny
    batched = generate(model, processor, examples, max_new_tokens=12)
    assert generate(model, processor, examples, max_new_tokens=12) == batched
    for ex, gen in zip(examples, batched, strict=True):
        (alone,) = generate(model, processor, [ex], max_new_tokens=12)
        assert alone.token_ids == gen.token_ids
        assert alone.logprobs == pytest.approx(gen.logprobs, abs=LOGPROB_TOL)


def test_logprobs_equal_a_separate_forward(tiny, examples):
    model, processor = tiny
    for temperature in (0.0, 1.0):
        gens = generate(model, processor, examples, 10, temperature=temperature, seed=5)
        batch = collate_score(processor, examples, [g.token_ids for g in gens])
        with torch.no_grad():
            logprobs_BR, valid_BR = score_replies(model, batch, allowed(model, processor))
        for b, gen in enumerate(gens):
            assert len(gen.logprobs) == len(gen.token_ids) == int(valid_BR[b].sum())
            assert gen.logprobs == pytest.approx(
                logprobs_BR[b, : len(gen.logprobs)].tolist(), abs=LOGPROB_TOL
            )


def test_sampling_is_seeded(tiny, examples):
    model, processor = tiny
    first = generate(model, processor, examples, 10, temperature=1.0, seed=1)
    assert generate(model, processor, examples, 10, temperature=1.0, seed=1) == first
    other = generate(model, processor, examples, 10, temperature=1.0, seed=2)
    assert [g.token_ids for g in other] != [g.token_ids for g in first]
    # a nucleus holding only the top token is greedy decoding
    narrow = generate(model, processor, examples, 10, temperature=1.0, top_p=1e-6, seed=3)
    greedy = generate(model, processor, examples, 10)
    assert [g.token_ids for g in narrow] == [g.token_ids for g in greedy]


def test_the_models_own_generation_settings_are_ignored(tiny_model_dir, tiny, examples):
    """A pretrained model's generation_config.json (sampling, penalties) must not leak in."""
    model, processor = load_model(tiny_model_dir, device="cpu", trainable=False)
    own = GenerationConfig(
        do_sample=True, temperature=0.1, top_k=2, repetition_penalty=1.5, min_new_tokens=5
    )
    model.generation_config = own
    assert generate(model, processor, examples, 8) == generate(*tiny, examples, 8)
    assert model.generation_config is own


def test_unclosed_replies_come_back_unfinished(tiny, examples):
    model, processor = tiny
    gens = generate(model, processor, examples, max_new_tokens=5, temperature=1.0, seed=0)
    for gen in gens:
        assert not gen.finished
        assert 1 <= len(gen.token_ids) <= 5
        assert gen.text == processor.tokenizer.decode(gen.token_ids, skip_special_tokens=True)


@pytest.mark.parametrize("every", [1, 3, 100])
def test_stops_mark_the_closing_token_whatever_the_check_interval(tiny, every):
    """Step-by-step (plain engine) and every-k-steps (static engine) checks agree."""
    _, processor = tiny
    tok = processor.tokenizer
    prompt = text_ids(processor, "user prompt")
    replies = ["size 3\n<answer>R D</answer> more", "size 3\n<answer>R D", "</ANSWER >", "a"]
    rows = [prompt + text_ids(processor, r) for r in replies]
    rows[3] = rows[3] + [end_id(processor)] + text_ids(processor, "</answer>")
    stops = _Stops(tok, [end_id(processor)], at_answer=True, batch_size=len(rows))
    stops.prompt_len = len(prompt)
    width = max(map(len, rows))
    seen: list[list[bool]] = [[] for _ in rows]
    for n in [*range(len(prompt) + every, width, every), width]:
        ids_BT = torch.tensor([(r + [0] * width)[:n] for r in rows])
        for b, done in enumerate(stops(ids_BT, None).tolist()):
            seen[b].append(done)
    closing = len(prompt + text_ids(processor, "size 3\n<answer>R D</answer>")) - len(prompt)
    assert stops.stopped_at[0] == closing  # at the token closing the tag, not the end
    assert stops.stopped_at[1] is None and not any(seen[1])
    assert stops.stopped_at[2] == len(rows[2]) - len(prompt)  # case and spaces as the parser
    assert stops.stopped_at[3] == len(text_ids(processor, "a")) + 1  # at the end token


@pytest.mark.slow
def test_tiny_model_learns_eight_replies(tiny_model_dir, tiny_image_size):
    """Full fine-tuning on 8 (picture, reply) pairs: the batches are learnable."""
    model, processor = load_model(tiny_model_dir, device="cpu")
    fl = puzzles.get("frozenlake")
    states = [fl.generate(3 + i % 2, 100 + i) for i in range(8)]
    examples = [
        Example(
            prompts.student_messages("frozenlake", "compact"),
            prompts.reply_text("frozenlake", s),
            fl.render(s, tiny_image_size),
        )
        for s in states
    ]
    batch = collate_train(processor, examples)
    steps = (
        300  # the loss falls below 10% within ~40 steps; exact recall of the states takes longer
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses
    prompts_only = [Example(e.messages, image=e.image) for e in examples]
    gens = generate(model, processor, prompts_only, 64)
    assert [g.text for g in gens] == [e.reply for e in examples]
    assert all(g.finished and g.token_ids[-1] != end_id(processor) for g in gens)
    # without the answer stop, each reply runs on to the learnt <|im_end|>
    gens = generate(model, processor, prompts_only, 64, stop_at_answer=False)
    assert [g.text for g in gens] == [e.reply for e in examples]
    assert all(g.finished and g.token_ids[-1] == end_id(processor) for g in gens)


def test_sampled_replies_never_contain_structural_tokens(tiny, examples):
    """A reply with an image placeholder would break scoring it under another prompt."""
    model, processor = tiny
    banned = set(banned_ids(processor.tokenizer))
    assert len(banned) == 5
    # push the banned tokens to the top of the distribution: they must still never be chosen
    head = model.get_output_embeddings()
    saved = head.weight.detach().clone()
    with torch.no_grad():
        head.weight[sorted(banned)] *= 50
    try:
        for temperature in (0.0, 2.0):
            gens = generate(model, processor, examples * 4, 24, temperature=temperature, seed=3)
            assert not banned & {t for g in gens for t in g.token_ids}
            batch = collate_score(processor, examples * 4, [g.token_ids for g in gens])
            with torch.no_grad():
                score_replies(model, batch, allowed(model, processor))  # image tokens still match
    finally:
        with torch.no_grad():
            head.weight.copy_(saved)
