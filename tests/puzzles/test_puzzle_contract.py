"""Contract tests run over every registered puzzle (Gymnasium / MiniGrid style).

Same seed -> same state, text and pixels; the expert (solve) scores perfectly on 200 generated
instances per side; canonical dicts and descriptions round-trip.
"""

from __future__ import annotations

import dataclasses
import io
import json

import pytest

from mgsd import puzzles

# the sides the paper evaluates, as each puzzle declares them
SIDES = {
    name: range(lo, hi + 1) for name in puzzles.NAMES for lo, hi in [puzzles.get(name).PAPER_LEVELS]
}
CASES = [(name, level) for name in puzzles.NAMES for level in SIDES[name]]
INTERFACE = (
    "LEVELS PAPER_LEVELS ILLEGAL ACTIONS FIELDS WORDING generate to_dict from_dict render "
    "describe parse_description field_values solve optimal_length simulate parse_answer "
    "format_answer score state_hash questions"
).split()


def answer(module, plan: list[str]) -> str:
    return f"<answer>{module.format_answer(plan)}</answer>"


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_registry_lists_every_puzzle_with_the_full_interface():
    assert puzzles.NAMES == ("frozenlake", "maze", "minibehaviour")
    for name in puzzles.NAMES:
        module = puzzles.get(name)
        assert module.NAME == name
        assert [f for f in INTERFACE if not hasattr(module, f)] == []
        assert module.FIELDS[0] == "level"
        lo, hi = module.LEVELS
        assert 2 <= lo <= hi, (name, module.LEVELS)
        assert lo <= module.PAPER_LEVELS[0] <= module.PAPER_LEVELS[1] <= hi, name
    with pytest.raises(ValueError, match="unknown puzzle 'sokoban'.*frozenlake"):
        puzzles.get("sokoban")


def test_a_puzzle_is_named_and_worded_in_its_module_and_the_registry_only():
    """Prompts take each puzzle's wording from its module; the config's puzzle tables follow
    the registry, so a new puzzle that the config does not know fails here, not in a run."""
    from mgsd import config
    from mgsd.puzzles import base

    assert config.PUZZLES == puzzles.NAMES
    assert set(config.LEVEL_RANGE) == set(puzzles.NAMES)
    assert set(config.BENCHMARK_SOURCES) <= set(puzzles.NAMES)
    for name in puzzles.NAMES:
        wording = puzzles.get(name).WORDING
        assert isinstance(wording, base.Wording)
        for sentence in dataclasses.astuple(wording):
            assert sentence.strip() and sentence.endswith("."), (name, sentence)


@pytest.mark.parametrize("name", puzzles.NAMES)
def test_same_seed_gives_the_same_state_text_and_pixels(name):
    module = puzzles.get(name)
    level = SIDES[name][-1]
    for seed in (0, 7):
        a, b = module.generate(level, seed), module.generate(level, seed)
        assert a == b
        assert module.describe(a) == module.describe(b)
        assert png(module.render(a, 64)) == png(module.render(b, 64))
        assert module.state_hash(a) == module.state_hash(b)
    hashes = {module.state_hash(module.generate(level, seed)) for seed in range(20)}
    assert len(hashes) >= 18  # different seeds give (almost always) different instances


@pytest.mark.parametrize("name,level", CASES)
def test_expert_plan_scores_perfectly_and_truncations_do_not(name, level):
    module = puzzles.get(name)
    for seed in range(200):
        state = module.generate(level, seed)
        assert state.level == level
        plan = module.solve(state)
        assert len(plan) == module.optimal_length(state) >= 1
        assert all(a in module.ACTIONS for a in plan)
        score = module.score(state, "I think so.\n" + answer(module, plan))
        assert (score.parsed, score.success, score.exact_match) == (True, True, True)
        assert score.progress_rate == 1.0 and score.illegal_kind == ""
        assert score.optimal_length == len(plan) and score.executed == len(plan)
        cut = seed % len(plan)  # remove one action: never an optimal success
        shorter = module.score(state, answer(module, plan[:cut] + plan[cut + 1 :]))
        assert not shorter.exact_match and shorter.progress_rate < 1.0
        if len(plan) > 1:
            assert module.score(state, answer(module, plan[:-1])).progress_rate == pytest.approx(
                (len(plan) - 1) / len(plan)
            )


@pytest.mark.parametrize("name,level", CASES)
def test_canonical_dict_and_description_round_trip(name, level):
    module = puzzles.get(name)
    for seed in range(30):
        state = module.generate(level, seed)
        d = module.to_dict(state)
        assert json.loads(json.dumps(d)) == d  # plain JSON
        assert module.from_dict(json.loads(json.dumps(d))) == state
        text = module.describe(state)
        assert module.parse_description(text) == module.field_values(state)
        assert set(module.field_values(state)) == set(module.FIELDS)
        reply = f"{text}\nGo around the obstacles.\n<answer>R</answer>"
        assert module.parse_description(reply) == module.field_values(state)


@pytest.mark.parametrize("name", puzzles.NAMES)
def test_parse_description_reads_partial_and_wrong_text(name):
    module = puzzles.get(name)
    state = module.generate(SIDES[name][0], 3)
    lines = module.describe(state).splitlines()
    partial = module.parse_description("\n".join(lines[:2]))
    assert partial == {k: v for k, v in module.field_values(state).items() if k in partial}
    assert "level" in partial and len(partial) == 2
    assert module.parse_description("") == {}
    assert module.parse_description(None) == {}
    assert module.parse_description("size 99999999999") == {}
    wrong = module.parse_description(module.describe(state).replace("size ", "size 1"))
    assert wrong["level"] != state.level


@pytest.mark.parametrize("name", puzzles.NAMES)
def test_render_is_rgb_at_the_requested_size(name):
    module = puzzles.get(name)
    state = module.generate(SIDES[name][0], 0)
    for size in (64, 256):
        image = module.render(state, size)
        assert image.mode == "RGB" and image.size == (size, size)
    assert module.render(state).size == (256, 256)
    other = module.generate(SIDES[name][0], 1)
    assert png(module.render(state, 64)) != png(module.render(other, 64))


@pytest.mark.parametrize("name", puzzles.NAMES)
def test_state_hash_is_sha1_of_sorted_canonical_json(name):
    import hashlib

    module = puzzles.get(name)
    state = module.generate(SIDES[name][0], 5)
    text = json.dumps(module.to_dict(state), sort_keys=True, separators=(",", ":"))
    assert module.state_hash(state) == hashlib.sha1(text.encode()).hexdigest()


@pytest.mark.parametrize("name", puzzles.NAMES)
def test_unparsed_reply_fails_with_zero_progress(name):
    module = puzzles.get(name)
    state = module.generate(SIDES[name][0], 0)
    for reply in ("no answer here", "<answer>fly away</answer>", "<answer></answer>", ""):
        score = module.score(state, reply)
        assert (score.parsed, score.success, score.exact_match) == (False, False, False)
        assert score.progress_rate == 0.0 and score.actions is None
        assert score.optimal_length == module.optimal_length(state)


@pytest.mark.parametrize(("name", "level"), CASES)
def test_perception_questions_are_answered_by_the_state_in_other_words(name, level):
    """Every cell is asked about, answers are short words (never the reply's `r c` form), and
    two states that differ get different answers somewhere."""
    module = puzzles.get(name)
    a, b = module.generate(level, 11), module.generate(level, 12)
    qa = module.questions(a)
    questions = [q for q, _ in qa]
    assert len(set(questions)) == len(questions) >= level * level
    assert all(q.endswith("?") and ans and len(ans) < 40 for q, ans in qa)
    reply_lines = set(module.describe(a).splitlines())
    assert not any(ans in reply_lines for _, ans in qa)
    assert module.to_dict(a) != module.to_dict(b)
    other = module.questions(b)
    assert [q for q, _ in other] == questions  # the questions depend on the side alone
    assert [x for _, x in other] != [x for _, x in qa]


@pytest.mark.parametrize("name", puzzles.NAMES)
def test_a_puzzle_declares_exactly_the_illegal_kinds_its_plans_make(name):
    """ILLEGAL is what the metrics count (`illegal_<kind>` rates): every kind a random plan
    runs into is declared, and every declared kind is met."""
    import random

    module, rng, seen = puzzles.get(name), random.Random(0), set()
    for seed in range(60):
        state = module.generate(SIDES[name][seed % len(SIDES[name])], seed)
        for _ in range(10):
            plan = [rng.choice(module.ACTIONS) for _ in range(rng.randrange(1, 12))]
            seen.add(module.simulate(state, plan).illegal_kind)
    assert seen - {""} == set(module.ILLEGAL), name
