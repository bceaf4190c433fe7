"""Tasks and mixtures of tasks: what each example of a supervised stage's batch is."""

from __future__ import annotations

import dataclasses
import io
import json
from collections import Counter

import pytest

from mgsd import puzzles
from mgsd.config import MixEntry
from mgsd.model.tasks import Instance, Mixture, make_example, task_success


def instances() -> list[Instance]:
    out = []
    for name in puzzles.NAMES:  # the paper's three smallest sides of each puzzle (or all of them)
        module = puzzles.get(name)
        lo, hi = module.PAPER_LEVELS
        for level in range(lo, min(hi, lo + 2) + 1):
            for seed in range(20):
                state = module.generate(level, seed)
                out.append(
                    Instance(
                        f"{name}-{level}-{seed}", name, level, json.dumps(module.to_dict(state)),
                        b"", module.format_answer(module.solve(state)),
                    )
                )  # fmt: skip
    return out


INSTS = instances()
MIX = {
    "symbolic": MixEntry(weight=0.5),
    "perception": MixEntry(weight=0.3, instances=10),
    "student": MixEntry(weight=0.2, sides=1),
    "teacher": MixEntry(weight=0.0),
}


def test_no_mix_is_the_stage_task_on_every_instance():
    slots = Mixture(None, "grounding", INSTS, 0).slots(list(range(30)), 7)
    assert {s.task for s in slots} == {"grounding"} and [s.index for s in slots] == list(range(30))


def test_mixture_is_a_function_of_seed_and_step_with_the_configured_shares():
    ids = list(range(len(INSTS))) * 20
    mix = Mixture(MIX, "symbolic", INSTS, seed=3)
    assert mix.slots(ids, 5) == Mixture(MIX, "symbolic", INSTS, seed=3).slots(ids, 5)
    assert mix.slots(ids, 5) != mix.slots(ids, 6)
    shares = Counter(s.task for s in mix.slots(ids, 5))
    assert "teacher" not in shares  # weight 0: never drawn
    for task, entry in MIX.items():
        if entry.weight:
            assert shares[task] / len(ids) == pytest.approx(entry.weight, abs=0.02)


def test_pools_keep_the_smallest_sides_and_cap_the_instances():
    slots = Mixture(MIX, "symbolic", INSTS, seed=3).slots(list(range(len(INSTS))) * 5, 1)
    small = {name: puzzles.get(name).PAPER_LEVELS[0] for name in puzzles.NAMES}
    student = {INSTS[s.index] for s in slots if s.task == "student"}
    assert {(x.puzzle, x.level) for x in student} == {(p, lv) for p, lv in small.items()}
    assert len({s.index for s in slots if s.task == "perception"}) == 10
    everything = {s.index for s in slots if s.task == "symbolic"}
    assert len(everything) > 0.9 * len(INSTS)


def test_perception_examples_ask_one_question_and_score_its_answer():
    picture = io.BytesIO()
    puzzles.get(INSTS[3].puzzle).render(INSTS[3].state, 64).save(picture, format="PNG")
    x = dataclasses.replace(INSTS[3], image_png=picture.getvalue())
    qa = puzzles.get(x.puzzle).questions(x.state)
    ex = make_example("perception", x, "compact", variant=len(qa) + 2)  # variants wrap around
    question, answer = qa[2]
    assert question in ex.messages[0]["content"][-1]["text"] and ex.reply == answer
    assert task_success("perception", x, f" {answer}\n", variant=2)
    assert not task_success("perception", x, "something else", variant=2)


def test_a_bad_row_is_named_before_any_model_loads(tmp_path, capsys):
    """Undecodable picture bytes or an invalid state stop a stage in one line that names the
    file, the row and the column, before the (here missing) model is even looked at."""
    from mgsd.data import records
    from mgsd.data.splits import generate_rows
    from mgsd.eval import evaluate

    rows = list(generate_rows("maze", "test", [3], 3, 1, 64, set(), {}, False))
    bad_image = [dict(r) for r in rows]
    bad_image[1]["image"] = b"not a png"
    bad_state = [dict(r) for r in rows]
    bad_state[2]["state"] = json.dumps({"level": 3, "grid": ["SF"]})
    for rows_, column, row in (
        (bad_image, "image", rows[1]["id"]),
        (bad_state, "state", rows[2]["id"]),
    ):
        path = records.write_data(rows_, tmp_path / f"{column}.parquet")
        argv = ["--model", str(tmp_path / "no-model"), "--method", "base", "--data", str(path),
                "--config", "{}", "--out-dir", str(tmp_path / "out")]  # fmt: skip
        assert evaluate.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{path}: row {row!r}, column '{column}'" in err, err
    assert not (tmp_path / "out").exists()


def test_the_target_reply_takes_the_stored_plan_which_is_the_solved_one():
    """One source of the plan: the data row's solution (`Instance.plan`), which equals the
    puzzle's `solve` for every row the pipeline writes."""
    from mgsd.model import prompts

    for inst in INSTS:
        assert inst.plan == puzzles.get(inst.puzzle).solve(inst.state)
        for style in prompts.STYLES:
            want = prompts.reply_text(inst.puzzle, inst.state, style)
            assert make_example("symbolic", inst, style).reply == want
    inst = INSTS[0]
    other = dataclasses.replace(inst, solution="U")  # the reply follows the stored plan
    assert make_example("symbolic", other, "compact").reply.endswith("<answer>U</answer>")
