"""Answer and description parsing: the documented forms, and never an exception on any text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgsd import puzzles
from mgsd.puzzles import base, frozenlake, minibehaviour

FRAGMENTS = st.sampled_from(
    ["<answer>", "</answer>", "<ANSWER>", "< /answer >", "<answer", "answer>", "U", "d", "L,R",
     "up", "Right", "PICK", "drop", ",", " ", "\n", "[", "]", "x", "size 3", "start 1 2",
     "holes 0 1, 2 2", "open", "DR L -", "table 1 1, 1 2", "9" * 40, "\u0130", "\x00"]
)  # fmt: skip
TEXTS = st.one_of(st.text(), st.lists(FRAGMENTS, max_size=30).map("".join))


@pytest.mark.parametrize(
    "text,plan",
    [
        ("<answer>R D D</answer>", ["R", "D", "D"]),
        ("<answer>R,D, D</answer>", ["R", "D", "D"]),
        ("<answer>RDD</answer>", ["R", "D", "D"]),
        ("<answer> right down Down </answer>", ["R", "D", "D"]),
        ("<answer>[u, l]</answer>", ["U", "L"]),
        ("<Answer>U</Answer>", ["U"]),
        ("<answer>L</answer> then <answer>R U</answer>", ["R", "U"]),  # the last block
        ("<answer><answer>D</answer></answer>", ["D"]),  # nested: innermost of the last
        ("<answer>L <answer>U</answer>", ["U"]),  # an unclosed earlier tag
        ("<answer>U</answer><answer>R", ["U"]),  # an unclosed last tag does not count
        ("<answer>R D\n</answer>\n", ["R", "D"]),
        ("no block: R D", None),
        ("<answer></answer>", None),
        ("<answer>R, jump</answer>", None),
        ("<answer>R PICK</answer>", None),  # no PICK in frozenlake
        ("<answer>R</answer", None),
    ],
)
def test_frozenlake_answer_forms(text, plan):
    assert frozenlake.parse_answer(text) == plan


@pytest.mark.parametrize(
    "text,plan",
    [
        ("<answer>U,R,PICK,D,DROP</answer>", ["U", "R", "PICK", "D", "DROP"]),
        ("<answer> u , r , pick , d , drop </answer>", ["U", "R", "PICK", "D", "DROP"]),
        ("<answer>UR PICK DROP</answer>", ["U", "R", "PICK", "DROP"]),
        ("<answer>U,R,PICKUP</answer>", None),
    ],
)
def test_minibehaviour_answer_forms(text, plan):
    assert minibehaviour.parse_answer(text) == plan


@pytest.mark.parametrize("name", puzzles.NAMES)
def test_non_strings_are_unparsed(name):
    module = puzzles.get(name)
    for value in (None, 3, b"<answer>U</answer>", ["<answer>U</answer>"]):
        assert module.parse_answer(value) is None
        assert module.parse_description(value) == {}


@settings(max_examples=300, deadline=None)
@given(text=TEXTS)
def test_parsers_never_raise(text):
    state = {name: puzzles.get(name).generate(5, 0) for name in puzzles.NAMES}
    for name in puzzles.NAMES:
        module = puzzles.get(name)
        plan = module.parse_answer(text)
        assert plan is None or (plan and all(a in module.ACTIONS for a in plan))
        fields = module.parse_description(text)
        assert set(fields) <= set(module.FIELDS)
        score = module.score(state[name], text)
        assert 0.0 <= score.progress_rate <= 1.0
        assert score.parsed == (plan is not None)


@settings(max_examples=100, deadline=None)
@given(plan=st.lists(st.sampled_from(minibehaviour.ACTIONS), min_size=1, max_size=20))
def test_format_then_parse_is_identity(plan):
    moves = [a for a in plan if a in frozenlake.ACTIONS]
    assert (
        minibehaviour.parse_answer(f"<answer>{minibehaviour.format_answer(plan)}</answer>") == plan
    )
    if moves:
        assert (
            frozenlake.parse_answer(f"x<answer>{frozenlake.format_answer(moves)}</answer>") == moves
        )


def test_answer_block_pairs_the_last_closing_tag():
    assert base.answer_block("a <answer> b </answer> c <answer> d </answer> e") == " d "
    assert base.answer_block("</answer><answer>") is None
    assert base.answer_block("<answer>x</answer>" * 10_000) == "x"


ADVERSARIAL = {  # 1 MB replies of the shapes that made the line patterns backtrack
    "spaces": " " * 1_000_000,
    "key then spaces": "size" + " " * 1_000_000 + "x",
    "cell then spaces": "start 1" + " " * 1_000_000 + "x",
    "cell list then spaces": "holes 1 1," + " " * 1_000_000 + "x",
    "tabs and spaces": "goal\t" + "\t " * 500_000 + "1",
    "newlines": "\n" * 1_000_000,
    "digits": "start " + "1" * 1_000_000,
    "one long maze row": "size 3\nopen\n" + "UD " * 333_333,
}


@pytest.mark.parametrize("shape", sorted(ADVERSARIAL))
def test_parsing_is_linear_on_adversarial_replies(shape):
    """Stated-state and answer parsing of a 1 MB reply take well under a second each (the line
    patterns once took 14 s on 32,000 spaces and grew quadratically)."""
    import time

    from mgsd.model import prompts

    text = ADVERSARIAL[shape]
    for name in puzzles.NAMES:
        t0 = time.perf_counter()
        assert isinstance(prompts.parse_stated_state(name, text), dict)
        assert puzzles.get(name).parse_answer(text + "<answer>U</answer>") == ["U"]
        assert time.perf_counter() - t0 < 1.0, (shape, name)
