"""`mgsd evaluate` on the tiny random model, and the scoring of hostile replies.

A random model almost never closes an answer block, so these runs exercise the unparsed path
end to end: such replies must be counted as failures in the records, never raised. The
`score_reply` cases use hand-made states whose metrics are worked out in the comments.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mgsd import puzzles
from mgsd.config import EvaluateConfig as EvalConfig
from mgsd.data import generate as data_generate
from mgsd.data import records
from mgsd.eval import evaluate
from mgsd.model import prompts
from mgsd.model.tasks import Instance, load_instances

CONDITIONS = ("image", "text", "image_oracle_state", "teacher")
TEXT_ONLY = ("text", "teacher")
# (levels, instances per level) of the small test files, one per puzzle: its two smallest sides
TEST_SETS = {n: ([lo, lo + 1], 2) for n in puzzles.NAMES for lo, _ in [puzzles.get(n).PAPER_LEVELS]}
EVAL_CFG = {"max_new_tokens": 8, "batch_size": 4}


@pytest.fixture(scope="module")
def test_files(tmp_path_factory, tiny_image_size) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("data")
    files = {}
    for puzzle, (levels, per_level) in TEST_SETS.items():
        path = out / f"{puzzle}_test.parquet"
        argv = ["--puzzle", puzzle, "--split", "test", "--levels", *map(str, levels)]
        argv += ["--per-level", str(per_level), "--seed", "3", "--image-size", str(tiny_image_size)]
        assert data_generate.main([*argv, "--out", str(path), "--no-progress"]) == 0
        files[puzzle] = path
    return files


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_dir, test_files) -> Path:
    """One `mgsd evaluate` run over every puzzle and condition; returns its output folder."""
    out = tmp_path_factory.mktemp("eval")
    argv = ["--model", str(tiny_model_dir), "--method", "base", "--replicate", "2"]
    argv += ["--data", *map(str, test_files.values()), "--conditions", *CONDITIONS]
    argv += ["--config", json.dumps(EVAL_CFG), "--out-dir", str(out)]
    assert evaluate.main(argv) == 0
    return out


def instance(puzzle: str, state: dict) -> Instance:
    p = puzzles.get(puzzle)
    solution = p.format_answer(p.solve(p.from_dict(state)))
    return Instance(f"{puzzle}-x", puzzle, state["level"], json.dumps(state), b"", solution)


# ---------------------------------------------------------------- mgsd evaluate


@pytest.mark.slow  # runs the tiny model
def test_records_cover_every_instance_puzzle_and_condition(evaluated, test_files):
    unparsed = 0
    for puzzle, data in test_files.items():
        ids = [r["id"] for r in records.read_data(data, columns=["id"])]
        for cond in CONDITIONS:
            path = evaluated / puzzle / f"{cond}.parquet"
            table = records.read_table(path, records.EVAL_SCHEMA)
            assert table.schema.names == list(records.EVAL_COLUMNS), path
            rows = table.to_pylist()
            assert [r["id"] for r in rows] == ids, path
            assert {(r["puzzle"], r["method"], r["replicate"], r["condition"]) for r in rows} == {
                (puzzle, "base", 2, cond)
            }
            for r in rows:
                assert r["success"] <= r["parsed"], r["id"]  # an unparsed reply never succeeds
                assert r["parser"] == "strict" and not r["external"], r["id"]
                assert r["success"] == r["success_strict"], r["id"]
                assert r["exact_match"] <= r["success"]
                assert 0.0 <= r["progress_rate"] <= 1.0
                assert (r["actions"] != "") == r["parsed"], r["id"]  # a parsed plan is non-empty
                fields = json.loads(r["state_fields"])
                assert set(fields) == set(puzzles.get(puzzle).FIELDS)
                assert r["state_correct"] == all(fields.values())
                assert 0 < r["reply_tokens"] <= EVAL_CFG["max_new_tokens"]
                assert r["seconds"] >= 0
            unparsed += sum(not r["parsed"] for r in rows)

            stats = json.loads(path.with_suffix(".json").read_text())
            assert (stats["method"], stats["puzzle"], stats["condition"]) == ("base", puzzle, cond)
            assert stats["n"] == len(ids)
            assert stats["parse_rate"] == pytest.approx(sum(r["parsed"] for r in rows) / len(ids))
            assert stats["success"] == pytest.approx(sum(r["success"] for r in rows) / len(ids))
    # 8 new tokens of a random model: replies without a closed answer block are the norm
    assert unparsed > 0


@pytest.mark.slow  # runs the tiny model
def test_prompts_follow_the_condition(evaluated, test_files):
    for puzzle, data in test_files.items():
        insts = load_instances([str(data)])
        p = puzzles.get(puzzle)
        for cond in CONDITIONS:
            rows = records.read_table(
                evaluated / puzzle / f"{cond}.parquet", records.EVAL_SCHEMA
            ).to_pylist()
            for inst, r in zip(insts, rows, strict=True):
                messages = json.loads(r["prompt"])
                parts = [c for m in messages for c in m["content"]]
                has_image = any(c["type"] == "image" for c in parts)
                text = "\n".join(c["text"] for c in parts if c["type"] == "text")
                assert has_image == (cond not in TEXT_ONLY), (puzzle, cond)
                assert (p.describe(inst.state) in text) == (cond in TEXT_ONLY), (puzzle, cond)
                plan = f"reference plan:\n<answer>{inst.solution}</answer>"
                assert (plan in text) == (cond == "teacher")


@pytest.mark.slow  # runs the tiny model
def test_oracle_state_reply_starts_with_the_true_state(evaluated, test_files):
    for puzzle, data in test_files.items():
        insts = load_instances([str(data)])
        rows = records.read_table(
            evaluated / puzzle / "image_oracle_state.parquet", records.EVAL_SCHEMA
        ).to_pylist()
        for inst, r in zip(insts, rows, strict=True):
            assert r["reply"].startswith(prompts.state_prefix(puzzle, inst.state)), r["id"]
            assert r["state_parsed"] and r["state_correct"], r["id"]
            assert all(json.loads(r["state_fields"]).values()), r["id"]
            # the forced prefix is not generated: the token count is the model's own reply
            assert r["reply_tokens"] <= EVAL_CFG["max_new_tokens"]


@pytest.mark.slow  # runs the tiny model
def test_limit_per_level_keeps_the_first_instances_of_each_side(
    tmp_path, tiny_model_dir, test_files
):
    insts = load_instances([str(test_files["frozenlake"])])
    assert [i.level for i in insts] == [3, 3, 4, 4]
    assert evaluate.select(insts, 0) == insts
    assert evaluate.select(insts, 1) == [insts[0], insts[2]]
    assert evaluate.select(insts, 2) == insts
    assert evaluate.select(insts, 5) == insts

    cfg = json.dumps({**EVAL_CFG, "limit_per_level": 1})
    argv = [
        "--model",
        str(tiny_model_dir),
        "--method",
        "m",
        "--data",
        str(test_files["frozenlake"]),
    ]
    argv += ["--conditions", "text", "--config", cfg, "--out-dir", str(tmp_path)]
    assert evaluate.main(argv) == 0
    rows = records.read_table(tmp_path / "frozenlake" / "text.parquet", records.EVAL_SCHEMA)
    assert rows.column("id").to_pylist() == [insts[0].id, insts[2].id]


def test_bad_config_missing_data_or_model_fail_with_a_message(tmp_path, test_files, capsys):
    base = ["--model", str(tmp_path / "model"), "--method", "m", "--out-dir", str(tmp_path)]
    missing = str(tmp_path / "nope.parquet")
    assert evaluate.main([*base, "--data", missing, "--config", json.dumps(EVAL_CFG)]) == 1
    assert "nope.parquet" in capsys.readouterr().err
    bad = json.dumps({**EVAL_CFG, "max_new_token": 3})
    assert evaluate.main([*base, "--data", missing, "--config", bad]) == 1
    assert "max_new_token" in capsys.readouterr().err
    data = str(test_files["maze"])
    assert evaluate.main([*base, "--data", data, "--config", json.dumps(EVAL_CFG)]) == 1
    assert str(tmp_path / "model") in capsys.readouterr().err
    assert not list(tmp_path.glob("*/*.parquet"))


@pytest.mark.slow  # runs the tiny model
def test_on_its_own_on_the_public_test_sets(tmp_path, tiny_model_dir, benchmarks_dir, capsys):
    """A model folder on the public test sets with no pipeline: every puzzle's test set, a
    one-screen summary with intervals, records only when asked for."""
    argv = ["--model", str(tiny_model_dir), "--benchmarks-dir", str(benchmarks_dir)]
    argv += ["--image-size", "64", "--config", json.dumps({**EVAL_CFG, "limit_per_level": 1})]
    assert evaluate.main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert not list(tmp_path.iterdir())  # no --out-dir: nothing written
    name = evaluate.model_name(str(tiny_model_dir))
    assert out.count("image input (the task)") == 1 and "SR (paper parser)" in out
    assert f"{name}: {tiny_model_dir}, compact prompts" in out  # a folder made by mgsd
    # one instance per side: VSP FrozenLake 3-8, Maze 3-6, VisualPlanning MiniBehaviour 5-6
    for puzzle, n in (("frozenlake", 6), ("maze", 4), ("minibehaviour", 2), ("macro", 12)):
        (line,) = [x for x in out.splitlines() if x.strip().startswith(f"{puzzle} ")]
        assert line.split()[1] == str(n) and line.count("[") == 4, line

    assert evaluate.main([*argv, "--puzzles", "minibehaviour", "--out-dir", str(tmp_path)]) == 0
    rows = records.read_table(tmp_path / "minibehaviour" / "image.parquet", records.EVAL_SCHEMA)
    assert [r.startswith("vprl-") for r in rows.column("id").to_pylist()] == [True, True]
    assert set(rows.column("method").to_pylist()) == {name}
    stats = json.loads((tmp_path / "minibehaviour" / "image.json").read_text())
    assert (stats["model"], stats["prompt_style"], stats["n"]) == (
        str(tiny_model_dir),
        "compact",
        2,
    )
    assert sorted(p.parent.name for p in tmp_path.glob("*/*.parquet")) == ["minibehaviour"]


def test_on_its_own_a_missing_benchmarks_folder_is_named(tmp_path, capsys):
    argv = ["--model", "org/model", "--benchmarks-dir", str(tmp_path / "nowhere")]
    assert evaluate.main(argv) == 1
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    with pytest.raises(SystemExit):  # test sets from files or from the benchmarks, not both
        evaluate.parse_args([*argv, "--data", "x.parquet"])
    assert evaluate.model_name("results/r/models/mgsd/model") == "mgsd"
    assert evaluate.model_name("Qwen/Qwen3-VL-4B-Instruct") == "Qwen3-VL-4B-Instruct"
    assert evaluate.parse_args(argv).prompt_style == "instruct"  # not a folder made by mgsd


# ---------------------------------------------------------------- hostile replies

# gymnasium's 4x4 map: start (0,0), goal (3,3), holes (1,1) (1,3) (2,3) (3,0); d* = 6
FL = {"level": 4, "grid": ["SFFF", "FHFH", "FFFH", "HFFG"]}
FL_STATE = "size 4\nstart 0 0\ngoal 3 3\nholes 1 1, 1 3, 2 3, 3 0\n"
FL_PLAN = "R R D D D R"
NOTHING = {
    "actions": "",
    "success": False,
    "exact_match": False,
    "progress_rate": 0.0,
    "parsed": False,
    "illegal_kind": "",
    "state_parsed": False,
    "state_correct": False,
}
SOLVED = {"success": True, "exact_match": True, "progress_rate": 1.0, "parsed": True}


def check(
    inst: Instance, reply: str, want: dict, fields: dict | None = None, parser: str = "strict"
) -> dict:
    got = evaluate.score_reply(inst, reply, "fail", parser)
    assert set(got) == {
        "actions", "success", "exact_match", "progress_rate", "parsed", "illegal_kind",
        "parser", "success_strict", "success_paper", "state_parsed", "state_correct",
        "state_fields",
    }  # fmt: skip
    assert got["parser"] == parser
    assert got["success"] == got[f"success_{parser}"]
    for key, value in want.items():
        assert got[key] == value, (key, reply[:200])
    if fields is not None:
        assert json.loads(got["state_fields"]) == fields, reply[:200]
    return got


FL_NO_FIELDS = {"level": False, "start": False, "goal": False, "holes": False}


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "x" * 1_000_000,
        "<answer>",
        "<answer>" + FL_PLAN,  # never closed
        FL_PLAN + "</answer>",  # never opened
        "<answer></answer>",  # empty block
        "<answer>R R X</answer>",  # a token that is no action
        "<answer>PICK</answer>",  # an action of another puzzle
        "\x00\xff\ufffd\ud800" + bytes(range(256)).decode("latin-1"),  # binary junk
        "size " + "9" * 100_000 + "\n<answer>" + "<" * 10_000,
    ],
    ids=[
        "empty",
        "huge",
        "open-tag",
        "unclosed",
        "unopened",
        "empty-block",
        "bad-token",
        "other-puzzle-action",
        "binary",
        "huge-number",
    ],  # fmt: skip
)
def test_unreadable_replies_are_unparsed_failures(reply):
    check(instance("frozenlake", FL), reply, NOTHING, FL_NO_FIELDS)


def test_correct_and_wrong_plans_score_by_hand():
    inst = instance("frozenlake", FL)
    all_right = dict.fromkeys(FL_NO_FIELDS, True)
    check(inst, FL_STATE + f"<answer>{FL_PLAN}</answer>", {**SOLVED, "state_correct": True})
    check(inst, f"<answer>{FL_PLAN}</answer>", {**SOLVED, "state_parsed": False}, FL_NO_FIELDS)
    # a correct answer after junk, nested tags or a later unclosed block still counts
    junk = bytes(range(1, 256)).decode("latin-1") * 100
    for reply in (
        junk + f"<answer>{FL_PLAN}</answer>",
        f"<answer><answer>{FL_PLAN}</answer>",
        f"<answer>D</answer> <answer>{FL_PLAN}</answer>",
        f"<answer>{FL_PLAN}</answer><answer>D",
        "<ANSWER> rrdddr </Answer>",
    ):
        check(inst, reply, {**SOLVED, "actions": "R,R,D,D,D,R"})
    # the last block wins: D to (1,0) (d* 5) is progress, then the plan ends: PR 1/6
    check(
        inst,
        f"<answer>{FL_PLAN}</answer> <answer>D</answer>",
        {"parsed": True, "success": False, "progress_rate": pytest.approx(1 / 6), "actions": "D"},
    )
    # R R R: (0,1) d*5 and (0,2) d*4 are progress, (0,3) is not (d*5); the 4th R leaves the grid
    got = check(
        inst,
        "<answer>" + "R " * 200_000 + "</answer>",
        {"parsed": True, "success": False, "illegal_kind": "offgrid"},
    )
    assert got["progress_rate"] == pytest.approx(2 / 6)
    assert got["actions"] == ",".join(["R"] * 200_000)
    # D R: (1,0) then the hole (1,1)
    check(
        inst,
        "<answer>D R</answer>",
        {"success": False, "illegal_kind": "hole", "progress_rate": pytest.approx(1 / 6)},
    )
    # success by a detour is not an exact match: L undoes the first R (PR 1/6), 8 moves
    check(
        inst,
        "<answer>R L R R D D D R</answer>",
        {"success": True, "exact_match": False, "progress_rate": pytest.approx(1 / 6)},
    )
    # actions after success are ignored: still an exact match
    check(inst, f"<answer>{FL_PLAN} U U U</answer>", SOLVED)
    assert all_right == json.loads(
        evaluate.score_reply(inst, FL_STATE + "<answer>U</answer>", "fail")["state_fields"]
    )


# replies whose two readings differ: (reply, strict success, paper success, paper actions)
TWO_READINGS = [
    # no answer block: the paper's evaluator reads the action words of the prose
    ("Go right, right, then down, down, down and right.", False, True, "R,R,D,D,D,R"),
    # an unclosed block: the same
    (f"<answer>{FL_PLAN}", False, True, "R,R,D,D,D,R"),
    # a word that is no action: strict rejects the block, the paper skips the word
    ("<answer>R R then D D D R</answer>", False, True, "R,R,D,D,D,R"),
    # two blocks: the paper takes the first, strict the last
    (f"<answer>{FL_PLAN}</answer> no, <answer>D</answer>", False, True, "R,R,D,D,D,R"),
    (f"<answer>D</answer> no, <answer>{FL_PLAN}</answer>", True, False, "D"),
    # the stated state alone: no move letter in FrozenLake's state text, nothing to read
    (FL_STATE, False, False, ""),
]


@pytest.mark.parametrize("reply,strict,paper,actions", TWO_READINGS)
@pytest.mark.parametrize("parser", ["strict", "paper"])
def test_both_readings_are_recorded_whichever_is_chosen(reply, strict, paper, actions, parser):
    inst = instance("frozenlake", FL)
    got = check(inst, reply, {"success_strict": strict, "success_paper": paper}, parser=parser)
    if parser == "paper":
        assert got["actions"] == actions
        assert got["parsed"] == bool(actions)
    assert got["success"] == (paper if parser == "paper" else strict)


def test_correct_plan_with_a_wrong_stated_state():
    inst = instance("frozenlake", FL)
    wrong = "size 4\nstart 0 0\ngoal 3 2\nholes 1 1\n"  # wrong goal, missing holes
    check(
        inst,
        wrong + f"<answer>{FL_PLAN}</answer>",
        {**SOLVED, "state_parsed": True, "state_correct": False},
        {"level": True, "start": True, "goal": False, "holes": False},
    )
    # a state stated after the answer is not a stated state
    check(
        inst,
        f"<answer>{FL_PLAN}</answer>\n" + FL_STATE,
        {**SOLVED, "state_parsed": False, "state_correct": False},
        FL_NO_FIELDS,
    )
    # the first line of each key counts: the right state, then a garbled repeat
    check(
        inst,
        FL_STATE + "size 7\ngoal 0 0\n<answer>D</answer>",
        {"state_parsed": True, "state_correct": True, "success": False},
    )


# snake maze 3x3: (0,0)->(0,1)->(0,2)->(1,2)->(1,1)->(1,0)->(2,0)->(2,1)->(2,2); d* = 8
def _maze() -> dict:
    open_dirs = [["R", "LR", "LD"], ["RD", "LR", "LU"], ["UR", "LR", "L"]]
    sides = {"U": "north", "D": "south", "L": "west", "R": "east"}
    walls = [[{s: d not in cell for d, s in sides.items()} for cell in row] for row in open_dirs]
    return {"level": 3, "walls": walls, "start": [0, 0], "goal": [2, 2]}


def test_maze_walls_and_the_grid_edge():
    inst = instance("maze", _maze())
    assert inst.solution == "R R D L L D R R"
    state = "size 3\nstart 0 0\ngoal 2 2\nopen\nR LR DL\nDR LR UL\nUR LR L\n"
    check(inst, state + "<answer>RRDLLDRR</answer>", {**SOLVED, "state_correct": True})
    check(inst, "<answer>D</answer>", {"success": False, "illegal_kind": "wall"})
    check(inst, "<answer>U</answer>", {"success": False, "illegal_kind": "offgrid"})
    # R R D L: 4 progressing moves to (1,1), whose south side is a wall
    check(
        inst,
        "<answer>R R D L D</answer>",
        {"illegal_kind": "wall", "progress_rate": pytest.approx(4 / 8)},
    )
    # a wrong wall row is a wrong walls field only
    bad = state.replace("DR LR UL", "DR LR L")
    check(
        inst,
        bad + "<answer>R</answer>",
        {"state_parsed": True, "state_correct": False},
        {"level": True, "start": True, "goal": True, "walls": False},
    )


# 5x5 floor, table rows 3-4 x cols 0-2, printer (0,4), agent (0,2): R PICK D D D DROP, d* = 6
MB = {
    "level": 5,
    "agent": [0, 2],
    "printer": [0, 4],
    "table": [[3, 0], [3, 1], [3, 2], [4, 0], [4, 1], [4, 2]],
}


def test_minibehaviour_illegal_kinds():
    inst = instance("minibehaviour", MB)
    state = "size 5\nagent 0 2\nprinter 0 4\ntable 3 0, 3 1, 3 2, 4 0, 4 1, 4 2\n"
    check(inst, state + "<answer>R,PICK,D,D,D,DROP</answer>", {**SOLVED, "state_correct": True})
    check(inst, "<answer>r pick d l d drop</answer>", {**SOLVED, "actions": "R,PICK,D,L,D,DROP"})
    check(inst, "<answer>PICK</answer>", {"illegal_kind": "bad_pick", "progress_rate": 0.0})
    check(inst, "<answer>DROP</answer>", {"illegal_kind": "bad_drop"})
    check(inst, "<answer>R,R</answer>", {"illegal_kind": "printer"})
    check(inst, "<answer>R,PICK,PICK</answer>", {"illegal_kind": "bad_pick"})
    # R PICK: 2 of 6; then R onto the printer's old cell is legal floor but no progress
    check(
        inst,
        "<answer>R,PICK,R</answer>",
        {"illegal_kind": "", "success": False, "progress_rate": pytest.approx(2 / 6)},
    )
    # D D D walks into the table at (3,2)
    check(inst, "<answer>D,D,D</answer>", {"illegal_kind": "table", "success": False})
    check(inst, "<answer>U</answer>", {"illegal_kind": "offgrid"})


def test_score_reply_is_fast_on_huge_replies():
    inst = instance("maze", _maze())
    reply = ("open\n" + "UD " * 50_000 + "\n") * 20 + "<answer>" + "R" * 100_000
    t0 = time.perf_counter()
    check(inst, reply, {"parsed": False, "success": False})
    assert time.perf_counter() - t0 < 5.0


def test_the_conditions_come_from_the_config_section_unless_given(tmp_path):
    """The pipeline passes its conditions once, in the evaluate section; --conditions picks
    others for one job; with neither (a section that does not name them, or none), image."""
    base = ["--model", "m", "--data", "d.parquet"]

    def chosen(*argv: str) -> list[str]:
        args = evaluate.parse_args([*base, *argv])
        return evaluate.conditions(args, evaluate.load_section(EvalConfig, args.config, "e"))

    section = json.dumps({"conditions": ["text", "teacher"], "max_new_tokens": 8})
    (tmp_path / "section.json").write_text(section)
    assert chosen("--config", section) == ["text", "teacher"]
    assert chosen("--config", f"@{tmp_path / 'section.json'}") == ["text", "teacher"]
    assert chosen("--config", section, "--conditions", "image", "text") == ["image", "text"]
    assert chosen("--config", json.dumps({"max_new_tokens": 8})) == ["image"]
    assert chosen() == ["image"]
