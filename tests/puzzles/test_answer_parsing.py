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


# (reply, strict reading, paper reading): the paper's evaluator takes the first block, skips
# words that are no action, and scans the whole reply when no block is closed
TWO_READINGS = [
    ("<answer>R D</answer> no: <answer>U</answer>", ["U"], ["R", "D"]),
    ("<answer>R then D</answer>", None, ["R", "D"]),
    ("<answer>R D", None, ["R", "D"]),  # never closed: the whole reply
    ("I go right, then Down twice: down.", None, ["R", "D", "D"]),
    ("size 3\nstart 0 0\ngoal 0 1\nopen\nR LR DL\nDR LR UL", None, list("RLRDLDRLRUL")),
    ("<answer>L <answer>U</answer>", ["U"], ["L", "U"]),  # first opening tag to next closing
    ("<answer>R</answer", None, ["R"]),
    ("<answer>rdd</answer>", ["R", "D", "D"], ["R", "D", "D"]),
    ("dull lullaby: I'll do it", None, None),  # lowercase runs outside a block are words
    ("<answer>R PICK</answer>", None, ["R"]),  # an action of another puzzle is skipped
    ("<answer>jump</answer> R", None, None),  # a closed block without actions: no scan
    ("<answer></answer>", None, None),
    ("no plan here", None, None),
]


@pytest.mark.parametrize("text,strict,paper", TWO_READINGS)
def test_strict_and_paper_readings(text, strict, paper):
    assert frozenlake.parse_answer(text) == strict
    assert frozenlake.parse_answer(text, "strict") == strict
    assert frozenlake.parse_answer(text, "paper") == paper


def test_paper_reading_of_minibehaviour_and_unknown_parsers():
    text = "agent 0 2\nthen R, pick it, D D d, DROP.\n<answer>U,R,PICKUP"
    assert minibehaviour.parse_answer(text, "paper") == ["R", "PICK", "D", "D", "DROP", "U", "R"]
    assert minibehaviour.parse_answer(text) is None
    with pytest.raises(ValueError, match="lenient"):
        frozenlake.parse_answer("<answer>U</answer>", "lenient")


def test_paper_reading_scores_state_text_as_a_plan():
    """A maze reply that states its state and stops: the strict parser finds no answer, the
    paper's reads 'R' of the first open-directions row as a move, and one move to the right is
    the whole optimal plan of this maze."""
    from mgsd.puzzles import maze

    open_dirs = [["R", "LD", "D"], ["D", "UD", "UD"], ["UR", "LUR", "LU"]]
    sides = {"U": "north", "D": "south", "L": "west", "R": "east"}
    walls = [[{s: d not in cell for d, s in sides.items()} for cell in row] for row in open_dirs]
    state = maze.from_dict({"level": 3, "walls": walls, "start": [0, 0], "goal": [0, 1]})
    reply = "size 3\nstart 0 0\ngoal 0 1\nopen\nR LD D\nD UD UD\nUR LUR LU\n"
    strict, paper = maze.score(state, reply), maze.score(state, reply, parser="paper")
    assert (strict.parsed, strict.success) == (False, False)
    assert (paper.parsed, paper.success, paper.exact_match) == (True, True, True)
    assert paper.actions[:2] == ("R", "L")


@pytest.mark.parametrize("name", puzzles.NAMES)
def test_non_strings_are_unparsed(name):
    module = puzzles.get(name)
    for value in (None, 3, b"<answer>U</answer>", ["<answer>U</answer>"]):
        assert module.parse_answer(value) is None
        assert module.parse_answer(value, "paper") is None
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
        lenient = module.parse_answer(text, "paper")
        assert lenient is None or (lenient and all(a in module.ACTIONS for a in lenient))
        assert module.score(state[name], text, parser="paper").parsed == (lenient is not None)


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
    "opening tags, none closed": "<answer>" * 125_000,
    "open brackets and spaces": "< " * 500_000,
    "an opening tag's blanks": "<answer" + " " * 1_000_000,
    "one run of moves": "R" * 1_000_000,
    "action words": "up, " * 250_000,
}


@pytest.mark.parametrize("shape", sorted(ADVERSARIAL))
def test_parsing_is_linear_on_adversarial_replies(shape):
    """Stated-state and answer parsing of a 1 MB reply take well under a second each (the line
    patterns once took 14 s on 32,000 spaces and grew quadratically)."""
    import time

    text = ADVERSARIAL[shape]
    for name in puzzles.NAMES:
        t0 = time.perf_counter()
        assert isinstance(base.parse_stated_state(puzzles.get(name), text), dict)
        assert puzzles.get(name).parse_answer(text + "<answer>U</answer>") == ["U"]
        assert time.perf_counter() - t0 < 1.0, (shape, name)
        t0 = time.perf_counter()
        for tail in ("", "</answer>", "<answer>U</answer>"):
            plan = puzzles.get(name).parse_answer(text + tail, "paper")
            assert plan is None or len(plan) <= len(text) + 1
        assert time.perf_counter() - t0 < 1.5, (shape, name, "paper")
