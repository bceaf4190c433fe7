"""`from_dict` rejects every kind of bad canonical dict with a ValueError naming the problem."""

from __future__ import annotations

import copy

import pytest

from mgsd import puzzles
from mgsd.puzzles import maze

LAKE = {"level": 3, "grid": ["SFF", "FHF", "FFG"]}
ROOM = {"level": 5, "agent": [2, 4], "printer": [1, 1], "table": [[3, 1], [3, 2], [3, 3], [4, 1], [4, 2], [4, 3]]}  # fmt: skip
MAZE = maze.to_dict(maze.generate(3, 0))


def edit(d: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(d)
    target = out
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


def maze_open_border() -> dict:
    return edit(MAZE, ("walls", 0, 0, "north"), False)


def maze_inconsistent() -> dict:
    d = copy.deepcopy(MAZE)
    east = d["walls"][1][0]["east"]
    d["walls"][1][0]["east"] = not east  # the neighbour's west wall stays as it was
    return d


def maze_cut_off_goal() -> dict:
    d = copy.deepcopy(MAZE)
    d["start"], d["goal"] = [0, 0], [2, 2]
    cell = d["walls"][2][2]
    for side, (r, c, opposite) in {"north": (1, 2, "south"), "west": (2, 1, "east")}.items():
        cell[side] = True
        d["walls"][r][c][opposite] = True
    return d


CASES = [
    ("frozenlake", ["SFF"], "expected a dict"),
    ("frozenlake", edit(LAKE, ("grid",), KeyError), "missing key 'grid'"),
    ("frozenlake", {**LAKE, "seed": 3}, "unknown key 'seed'"),
    ("frozenlake", edit(LAKE, ("level",), "3"), "level must be an integer"),
    ("frozenlake", edit(LAKE, ("level",), True), "level must be an integer"),
    ("frozenlake", edit(LAKE, ("level",), 1), "level 1 outside"),
    ("frozenlake", edit(LAKE, ("grid",), "SFFFHFFFG"), "list of strings"),
    ("frozenlake", edit(LAKE, ("grid",), ["SFF", "FFG"]), "grid has 2 rows, level is 3"),
    ("frozenlake", edit(LAKE, ("grid", 1), "FH"), "grid row 1 has 2 cells"),
    ("frozenlake", edit(LAKE, ("grid", 1), "FXF"), "bad character 'X'"),
    ("frozenlake", edit(LAKE, ("grid", 1), "SHF"), "2 start cells"),
    ("frozenlake", edit(LAKE, ("grid", 2), "FFF"), "0 goal cells"),
    ("frozenlake", edit(LAKE, ("grid",), ["SFH", "FHF", "HFG"]), "goal is unreachable"),
    ("maze", edit(MAZE, ("walls",), MAZE["walls"][:2]), "walls must be a list of 3 rows"),
    ("maze", edit(MAZE, ("walls", 1), MAZE["walls"][1][:2]), "walls row 1 must be a list of 3"),
    ("maze", edit(MAZE, ("walls", 0, 1, "east"), KeyError), r"walls\[0\]\[1\] must be a dict"),
    ("maze", edit(MAZE, ("walls", 0, 1, "east"), 1), "must be true or false"),
    ("maze", maze_open_border(), "cell 0 0 has no north wall on the border"),
    ("maze", maze_inconsistent(), "inconsistent walls: cell 1 0 east"),
    ("maze", edit(MAZE, ("start",), [3, 0]), r"start: \[3, 0\] is outside the 3x3 grid"),
    ("maze", edit(MAZE, ("goal",), [1]), r"goal: expected \[row, col\]"),
    ("maze", edit(MAZE, ("goal",), MAZE["start"]), "start and goal are the same cell"),
    ("maze", maze_cut_off_goal(), "goal is unreachable"),
    ("minibehaviour", edit(ROOM, ("table",), ROOM["table"][:5]), "table must be a list of 6"),
    ("minibehaviour", edit(ROOM, ("table", 5), [2, 3]), "not a contiguous block of 2 rows x 3"),
    (
        "minibehaviour",
        edit(ROOM, ("table",), [[r, c] for r in range(3) for c in range(2)]),
        "2 rows x 3",
    ),  # fmt: skip
    ("minibehaviour", edit(ROOM, ("table", 5), [4, 5]), r"table cell: \[4, 5\] is outside"),
    ("minibehaviour", edit(ROOM, ("agent",), [3, 2]), r"agent \[3, 2\] is on the table"),
    ("minibehaviour", edit(ROOM, ("printer",), [4, 1]), r"printer \[4, 1\] is on the table"),
    ("minibehaviour", edit(ROOM, ("agent",), [1, 1]), "agent and printer share the cell"),
    ("minibehaviour", edit(ROOM, ("level",), 2), "level 2 outside"),
    ("minibehaviour", edit(ROOM, ("agent",), [2, True]), "agent: expected"),
]


@pytest.mark.parametrize("name,d,message", CASES)
def test_from_dict_names_the_problem(name, d, message):
    with pytest.raises(ValueError, match=message):
        puzzles.get(name).from_dict(d)


@pytest.mark.parametrize("name,d", [("frozenlake", LAKE), ("maze", MAZE), ("minibehaviour", ROOM)])
def test_the_unedited_dicts_are_valid_and_canonical(name, d):
    module = puzzles.get(name)
    expected = {**d, "table": sorted(d["table"])} if "table" in d else d
    assert module.to_dict(module.from_dict(d)) == expected
    shuffled = {**d, "table": d["table"][::-1]} if "table" in d else d
    assert module.from_dict(shuffled) == module.from_dict(d)
