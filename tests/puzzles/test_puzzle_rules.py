"""The puzzle rules (each puzzle module's docstring) on small hand-made instances, one case per rule."""

from __future__ import annotations

import pytest

from mgsd.puzzles import frozenlake, maze, minibehaviour

LAKE = frozenlake.from_dict({"level": 3, "grid": ["SFF", "FHF", "FFG"]})  # d* = 4


def lake(text: str, offgrid: str = "fail"):
    return frozenlake.score(LAKE, f"<answer>{text}</answer>", offgrid)


def test_frozenlake_optimal_and_ignored_tail():
    assert frozenlake.optimal_length(LAKE) == 4
    s = lake("R R D D U U")  # actions after success are ignored
    assert (s.success, s.exact_match, s.progress_rate, s.executed) == (True, True, 1.0, 4)


def test_frozenlake_hole_stops_execution():
    s = lake("R D R R D D")
    assert (s.success, s.illegal_kind, s.executed, s.progress_rate) == (False, "hole", 1, 0.25)
    sim = frozenlake.simulate(LAKE, ["R", "D", "R"])
    assert (sim.illegal_index, sim.illegal_kind, sim.position) == (1, "hole", (0, 1))


def test_frozenlake_detour_succeeds_without_exact_match():
    s = lake("R L R R D D")
    assert (s.success, s.exact_match, s.executed) == (True, False, 6)
    assert s.progress_rate == 0.25  # R helps, L does not: the prefix stops there


def test_frozenlake_offgrid_fails_by_default_and_stays_on_request():
    s = lake("U R R D D")
    assert (s.success, s.illegal_kind, s.progress_rate) == (False, "offgrid", 0.0)
    s = lake("U R R D D", offgrid="stay")
    assert (s.success, s.exact_match, s.illegal_kind, s.progress_rate) == (True, False, "", 0.0)
    with pytest.raises(ValueError, match="offgrid"):
        lake("R", offgrid="wrap")


def test_frozenlake_describe_is_short_and_fixed():
    assert frozenlake.describe(LAKE) == "size 3\nstart 0 0\ngoal 2 2\nholes 1 1"
    empty = frozenlake.from_dict({"level": 2, "grid": ["SG", "FF"]})
    assert frozenlake.describe(empty).endswith("holes none")
    assert frozenlake.parse_description("holes none")["holes"] == ()


def _maze() -> maze.State:
    # 2x2: (0,0) - (0,1) open, (0,1) - (1,1) open, (0,0) | (1,0) walled, (1,0) - (1,1) open
    walls = [
        [
            {"north": True, "south": True, "east": False, "west": True},
            {"north": True, "south": False, "east": True, "west": False},
        ],
        [
            {"north": True, "south": True, "east": False, "west": True},
            {"north": False, "south": True, "east": True, "west": False},
        ],
    ]
    return maze.from_dict({"level": 2, "walls": walls, "start": [0, 0], "goal": [1, 0]})


def test_maze_walls_and_border():
    m = _maze()
    assert maze.solve(m) == ["R", "D", "L"]
    assert maze.describe(m) == "size 2\nstart 0 0\ngoal 1 0\nopen\nR DL\nR UL"
    s = maze.score(m, "<answer>D</answer>")
    assert (s.success, s.illegal_kind) == (False, "wall")
    s = maze.score(m, "<answer>L R D L</answer>")
    assert (s.success, s.illegal_kind) == (False, "offgrid")
    s = maze.score(m, "<answer>L R D L</answer>", offgrid="stay")
    assert (s.success, s.exact_match, s.progress_rate) == (True, False, 0.0)
    s = maze.score(m, "<answer>R D D</answer>")
    assert (s.illegal_kind, s.progress_rate) == ("offgrid", pytest.approx(2 / 3))


# VPRL test line 0: agent (2, 4), printer (1, 1), table rows 3-4 x cols 1-3; d* = 5
ROOM = minibehaviour.from_dict(
    {
        "level": 5,
        "agent": [2, 4],
        "printer": [1, 1],
        "table": [[3, 1], [4, 1], [3, 2], [4, 2], [3, 3], [4, 3]],
    }
)


def room(text: str):
    return minibehaviour.score(ROOM, f"<answer>{text}</answer>")


def test_minibehaviour_pick_and_drop_on_the_same_cell():
    assert minibehaviour.solve(ROOM) == ["L", "L", "L", "PICK", "DROP"]
    s = room("L,L,L,PICK,DROP,U")
    assert (s.success, s.exact_match, s.executed) == (True, True, 5)


@pytest.mark.parametrize(
    "plan,kind,executed",
    [
        ("L,L,D", "table", 2),  # (2, 2) -> (3, 2) is a table cell
        ("L,L,L,U", "printer", 3),  # the printer cell is blocked before the pick
        ("PICK", "bad_pick", 0),  # not next to the printer
        ("L,L,L,PICK,PICK", "bad_pick", 4),  # already carrying
        ("DROP", "bad_drop", 0),  # not carrying
        ("U,L,L,PICK,U,U,DROP", "offgrid", 5),  # (0, 2) -> up leaves the grid
    ],
)
def test_minibehaviour_illegal_kinds(plan, kind, executed):
    s = room(plan)
    assert (s.success, s.illegal_kind, s.executed) == (False, kind, executed)


def test_minibehaviour_drop_needs_a_table_neighbour_and_printer_cell_opens():
    s = room("U,L,L,PICK,DROP")  # (1, 2): next to the printer, not to the table
    assert (s.success, s.illegal_kind) == (False, "bad_drop")
    s = room("U,L,L,PICK,L,D,DROP")  # walks through the picked-up printer's cell
    assert (s.success, s.exact_match, s.illegal_kind) == (True, False, "")
    assert s.progress_rate == 0.0  # U leaves d* at 5


def test_minibehaviour_progress_counts_the_optimal_prefix():
    s = room("L,L,U,PICK,D,DROP")  # L, L lower d* to 3; U keeps it at 3
    assert (s.success, s.exact_match, s.executed) == (True, False, 6)
    assert s.progress_rate == pytest.approx(2 / 5)


def test_minibehaviour_answer_format():
    assert minibehaviour.format_answer(["U", "PICK", "DROP"]) == "U,PICK,DROP"
    assert minibehaviour.parse_answer("<answer>u, pick ,Drop</answer>") == ["U", "PICK", "DROP"]
    assert frozenlake.parse_answer("<answer>U,PICK</answer>") is None


def test_simulate_rejects_actions_of_another_puzzle():
    with pytest.raises(ValueError, match="unknown action 'PICK'"):
        frozenlake.simulate(LAKE, ["R", "PICK"])
    assert minibehaviour.simulate(ROOM, ["L", "L", "L", "PICK", "DROP"]).success
