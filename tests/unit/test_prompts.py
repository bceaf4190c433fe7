"""Prompt wording and reply format: placeholders, the state-first reply, parsing back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgsd import puzzles
from mgsd.model import prompts
from mgsd.puzzles import base

LEVELS = {name: puzzles.get(name).PAPER_LEVELS for name in puzzles.NAMES}  # smallest, largest
CASES = [(name, level) for name, levels in LEVELS.items() for level in levels]


def _images(messages):
    return sum(
        1
        for m in messages
        for item in m["content"]
        if isinstance(item, dict) and item["type"] == "image"
    )


def _text(messages):
    return "\n".join(
        item["text"] for m in messages for item in m["content"] if item["type"] == "text"
    )


@pytest.mark.parametrize("style", prompts.STYLES)
@pytest.mark.parametrize(("name", "level"), CASES)
def test_prompt_kinds_and_placeholders(name, level, style):
    module = puzzles.get(name)
    state = module.generate(level, 7)
    student = prompts.student_messages(name, style)
    grounding = prompts.grounding_messages(name, style)
    symbolic = prompts.symbolic_messages(name, state, style)
    teacher = prompts.symbolic_messages(name, state, style, plan=module.solve(state))
    assert (_images(student), _images(grounding), _images(symbolic), _images(teacher)) == (
        1,
        1,
        0,
        0,
    )
    assert all(m["role"] == "user" for m in student + grounding + symbolic + teacher)
    assert module.describe(state) in _text(symbolic)
    assert module.format_answer(module.solve(state)) in _text(teacher)
    extra = [line for line in _text(teacher).split("\n") if line not in _text(symbolic).split("\n")]
    answer = module.format_answer(module.solve(state))
    if style == "compact":  # the plan as the reply writes it, so the teacher copies tokens
        assert extra == ["reference plan:", f"<answer>{answer}</answer>"]
    else:
        assert len(extra) == 1 and extra[0].endswith(answer)
    assert module.describe(state) not in _text(student)  # the picture is the only state source
    # the canonical dict works as well as the State
    assert prompts.symbolic_messages(name, module.to_dict(state), style) == symbolic


def test_instruct_prompts_explain_actions_and_formats():
    for name in puzzles.NAMES:
        text = _text(prompts.student_messages(name, "instruct"))
        for action in puzzles.get(name).ACTIONS:
            assert action in text
        assert "<answer>" in text and "row 0 is the top" in text
        assert len(text) > 3 * len(_text(prompts.student_messages(name, "compact")))


@pytest.mark.parametrize("style", prompts.STYLES)
@pytest.mark.parametrize(("name", "level"), CASES)
def test_reply_states_first_and_solves(name, level, style):
    module = puzzles.get(name)
    state = module.generate(level, 11)
    reply = prompts.reply_text(name, state, style)
    assert reply.startswith(prompts.state_prefix(name, state))
    assert prompts.state_prefix(name, state) == module.describe(state) + "\n"
    assert reply.endswith(f"<answer>{module.format_answer(module.solve(state))}</answer>")
    between = reply[len(module.describe(state)) : reply.rindex("<answer>")].strip()
    assert between.count("\n") == 0 and (style == "instruct") == bool(between)  # <= one line
    result = module.score(state, reply)
    assert result.success and result.exact_match
    assert base.parse_stated_state(puzzles.get(name), reply) == module.field_values(state)
    assert prompts.grounding_reply(name, state) == module.describe(state)
    assert base.parse_stated_state(puzzles.get(name), prompts.grounding_reply(name, state)) == (
        module.field_values(state)
    )


def test_stated_state_is_read_before_the_last_answer():
    fl = puzzles.get("frozenlake")
    state = fl.generate(4, 3)
    other = fl.generate(5, 4)
    reply = (
        prompts.reply_text("frozenlake", state) + "\n" + fl.describe(other) + "\n<answer>R</answer>"
    )
    # the first stated state comes first; text after the last <answer> never counts
    assert base.parse_stated_state(puzzles.get("frozenlake"), reply) == fl.field_values(state)
    tail_only = "<answer>R</answer>\n" + fl.describe(state)
    assert base.parse_stated_state(puzzles.get("frozenlake"), tail_only) == {}


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.none(), st.integers(), st.text(max_size=300)))
def test_parse_stated_state_never_raises(text):
    for name in puzzles.NAMES:
        assert isinstance(base.parse_stated_state(puzzles.get(name), text), dict)


def test_bad_style_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'chatty'"):
        prompts.student_messages("maze", "chatty")


def test_tokenizer_corpus_is_deterministic_and_covers_every_puzzle():
    corpus = prompts.tokenizer_corpus()
    assert corpus == prompts.tokenizer_corpus()
    joined = "\n".join(corpus)
    for name in puzzles.NAMES:
        assert name in joined
    assert "PICK" in joined and "DROP" in joined and "holes" in joined and "open" in joined
