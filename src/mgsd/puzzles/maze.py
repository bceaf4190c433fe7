"""Maze: walk from the start cell to the goal cell between walls.

State: N x N cells, each with walls on its north/south/east/west sides (the grid border is
always walled), a start and a goal cell; canonical dict ``{"level": N, "walls": [[{"north": b,
"south": b, "east": b, "west": b}, ...], ...], "start": [r, c], "goal": [r, c]}``.
Actions: ``U D L R``. A move through a wall is illegal (kind ``wall``); a move off the grid is
illegal (kind ``offgrid``) unless ``offgrid="stay"`` (the agent stays put). Success: reaching
the goal.

Generation: a perfect maze (a spanning tree of the grid, by randomized depth-first search from
a random cell), start and goal drawn uniformly, distinct. Picture: black walls, white
corridors, a yellow start disc and a blue goal disc. Description: the open directions of every
cell as letters in the order U D L R (``-``: closed on all sides), one row per line::

    size 3
    start 0 1
    goal 2 2
    open
    DR LR DL
    UD D UD
    U UR UL
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw

from mgsd.puzzles import base
from mgsd.puzzles.base import Pos, Score, Simulation

NAME = "maze"
LEVELS = (2, 12)  # the sides a config may ask for, smallest and largest
PAPER_LEVELS = (3, 6)  # the sides the MGSD paper evaluates (its presets and tests)
ILLEGAL = ("wall", "offgrid")  # the kinds of illegal action its plans can make
ACTIONS = ("U", "D", "L", "R")
FIELDS = ("level", "start", "goal", "walls")

# what an instruct prompt says of this puzzle (mgsd.model.prompts puts it together)
WORDING = base.Wording(
    rules=(
        "Maze: an N x N grid of cells separated by walls. The agent must walk from the start "
        "cell to the goal cell. Moving through a wall or off the grid fails."
    ),
    picture=(
        "In the picture the walls are black and the corridors white; the yellow disc is the "
        "start cell and the blue disc the goal cell."
    ),
    actions="Actions: U (up), D (down), L (left), R (right).",
    state_format=(
        "State format, one item per line: 'size N', 'start r c', 'goal r c', then the line "
        "'open' followed by N lines, one per row, giving for every cell the directions you "
        "can leave it by, as letters in the order U D L R ('-' for none), cells separated by "
        "spaces."
    ),
    answer_format="Answer format: the moves separated by spaces, e.g. <answer>R R D L</answer>.",
)

SIDES = {"U": "north", "D": "south", "L": "west", "R": "east"}
OPPOSITE = {"U": "D", "D": "U", "L": "R", "R": "L"}
CELL_PX, WALL_PX = 48, 12  # native picture: walls a quarter of the cell pitch survive 64 px
YELLOW, BLUE = (255, 210, 0), (0, 90, 255)


@dataclass(frozen=True)
class State:
    level: int
    passages: tuple[tuple[str, ...], ...]  # per cell its open directions, letters in U D L R order
    start: Pos
    goal: Pos


def _code(letters: set[str] | str) -> str:
    return "".join(a for a in ACTIONS if a in letters)


def _step(state: State, pos: Pos, action: str, offgrid: str) -> tuple[Pos, str]:
    nxt = base.step_pos(pos, action)
    if not base.inside(nxt, state.level):
        return (pos, "") if offgrid == "stay" else (pos, "offgrid")
    if action not in state.passages[pos[0]][pos[1]]:
        return pos, "wall"
    return nxt, ""


def _planner_uncached(state: State) -> base.Planner:
    goal = state.goal
    return base.Planner(state.start, ACTIONS, functools.partial(_step, state), lambda p: p == goal)


_planner = functools.lru_cache(maxsize=4096)(_planner_uncached)


# ---------------------------------------------------------------- generation and dicts


def generate(level: int, seed: int) -> State:
    if level < 2:
        raise ValueError(f"maze: level {level} is below 2")
    rng = random.Random(seed)
    cells = [(r, c) for r in range(level) for c in range(level)]
    opened: dict[Pos, set[str]] = {p: set() for p in cells}
    first = rng.choice(cells)
    stack, seen = [first], {first}
    while stack:
        here = stack[-1]
        options = [
            (a, nxt)
            for a in ACTIONS
            if base.inside(nxt := base.step_pos(here, a), level) and nxt not in seen
        ]
        if not options:
            stack.pop()
            continue
        a, nxt = rng.choice(options)
        opened[here].add(a)
        opened[nxt].add(OPPOSITE[a])
        seen.add(nxt)
        stack.append(nxt)
    start, goal = rng.sample(cells, 2)
    rows = tuple(tuple(_code(opened[(r, c)]) for c in range(level)) for r in range(level))
    return State(level, rows, start, goal)


def to_dict(state: State) -> dict:
    walls = [
        [{side: a not in code for a, side in SIDES.items()} for code in row]
        for row in state.passages
    ]
    return {
        "level": state.level,
        "walls": walls,
        "start": list(state.start),
        "goal": list(state.goal),
    }


def _cell_walls(cell: object, r: int, c: int) -> dict[str, bool]:
    where = f"maze state: walls[{r}][{c}]"
    if not isinstance(cell, dict) or set(cell) != set(SIDES.values()):
        raise ValueError(f"{where} must be a dict with keys north, south, east, west; got {cell!r}")
    if not all(isinstance(v, bool) for v in cell.values()):
        raise ValueError(f"{where} values must be true or false, got {cell!r}")
    return cell


def from_dict(d: dict) -> State:
    base.check_keys(d, NAME, ("level", "walls", "start", "goal"))
    n = base.check_level(d["level"], NAME, 2)
    walls = d["walls"]
    if not isinstance(walls, (list, tuple)) or len(walls) != n:
        raise ValueError(f"maze state: walls must be a list of {n} rows")
    for r, row in enumerate(walls):
        if not isinstance(row, (list, tuple)) or len(row) != n:
            raise ValueError(f"maze state: walls row {r} must be a list of {n} cells")
    cells = [[_cell_walls(walls[r][c], r, c) for c in range(n)] for r in range(n)]
    for r in range(n):
        for c in range(n):
            for a, side in SIDES.items():
                q = base.step_pos((r, c), a)
                if not base.inside(q, n):
                    if not cells[r][c][side]:
                        raise ValueError(
                            f"maze state: cell {r} {c} has no {side} wall on the border"
                        )
                elif cells[r][c][side] != (other := cells[q[0]][q[1]][SIDES[OPPOSITE[a]]]):
                    raise ValueError(
                        f"maze state: inconsistent walls: cell {r} {c} {side}={cells[r][c][side]}"
                        f" but its neighbour {q[0]} {q[1]} {SIDES[OPPOSITE[a]]}={other}"
                    )
    start = base.check_pos(d["start"], n, "maze state: start")
    goal = base.check_pos(d["goal"], n, "maze state: goal")
    if start == goal:
        raise ValueError(f"maze state: start and goal are the same cell {list(start)}")
    rows = tuple(
        tuple(_code({a for a, side in SIDES.items() if not cell[side]}) for cell in row)
        for row in cells
    )
    state = State(n, rows, start, goal)
    if optimal_length(state) is None:
        raise ValueError("maze state: the goal is unreachable from the start")
    return state


def state_hash(state: State) -> str:
    return base.state_hash(to_dict(state))


# ---------------------------------------------------------------- pictures


def render(state: State, size: int = 256) -> Image.Image:
    side = state.level * CELL_PX + WALL_PX
    image = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    span = CELL_PX + WALL_PX - 1
    for r, row in enumerate(state.passages):
        for c, code in enumerate(row):
            x, y = c * CELL_PX, r * CELL_PX
            draw.rectangle((x, y, x + WALL_PX - 1, y + WALL_PX - 1), fill=(0, 0, 0))  # corner post
            if "U" not in code:
                draw.rectangle((x, y, x + span, y + WALL_PX - 1), fill=(0, 0, 0))
            if "L" not in code:
                draw.rectangle((x, y, x + WALL_PX - 1, y + span), fill=(0, 0, 0))
            if "D" not in code:
                draw.rectangle((x, y + CELL_PX, x + span, y + span), fill=(0, 0, 0))
            if "R" not in code:
                draw.rectangle((x + CELL_PX, y, x + span, y + span), fill=(0, 0, 0))
    radius = CELL_PX * 0.32
    for (r, c), colour in ((state.start, YELLOW), (state.goal, BLUE)):
        cx = c * CELL_PX + (CELL_PX + WALL_PX) / 2
        cy = r * CELL_PX + (CELL_PX + WALL_PX) / 2
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    return base.resize(image, size)


# ---------------------------------------------------------------- text


def field_values(state: State) -> dict:
    return {"level": state.level, "start": state.start, "goal": state.goal, "walls": state.passages}


def describe(state: State) -> str:
    rows = "\n".join(" ".join(code or "-" for code in row) for row in state.passages)
    start, goal = base.fmt_pos(state.start), base.fmt_pos(state.goal)
    return f"size {state.level}\nstart {start}\ngoal {goal}\nopen\n{rows}"


_ROW = re.compile(r"[ \t]*(?:[UDLR]+|-)(?:[ \t]+(?:[UDLR]+|-))*[ \t]*", re.IGNORECASE)


def parse_description(text: str) -> dict:
    if not isinstance(text, str):
        return {}
    text = base.squeeze_blanks(text)
    out = base.read_fields(text, {"start": "start", "goal": "goal"}, ())
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if line.strip().lower() == "open"), None)
    if header is None:
        return out
    rows = []
    for line in lines[header + 1 : header + 1 + out.get("level", len(lines))]:
        # a row holds at most MAX_LEVEL cells of at most 5 characters each
        if len(line) > 5 * base.MAX_LEVEL or not _ROW.fullmatch(line):
            break
        rows.append(tuple(_code(set(code.upper()) - {"-"}) for code in line.split()))
    if rows:
        out["walls"] = tuple(rows)
    return out


_WALL_WORDS = {"U": "top", "D": "bottom", "L": "left", "R": "right"}


def questions(state: State) -> list[tuple[str, str]]:
    """Generic questions about the picture and their answers, in words that are not the
    reply's: the size, the start and the goal, and the walls around every cell."""
    qa = [
        base.size_question(state.level),
        base.where_question("the yellow disc", state.start),
        base.where_question("the blue disc", state.goal),
    ]
    for r, row in enumerate(state.passages):
        for c, code in enumerate(row):
            walls = [_WALL_WORDS[a] for a in ACTIONS if a not in code]
            qa.append(
                (f"Which sides of the cell at {base.say_cell((r, c))} have a wall?",
                 ", ".join(walls).capitalize() or "None")
            )  # fmt: skip
    return qa


# ---------------------------------------------------------------- plans


def solve(state: State) -> list[str]:
    return _planner(state).solve()


def optimal_length(state: State) -> int | None:
    """d*(s0); None when the goal is unreachable (never for a validated state)."""
    return _planner(state).optimal_length


def simulate(state: State, actions: list[str], offgrid: str = "fail") -> Simulation:
    return _planner(state).run(actions, offgrid)[0]


def parse_answer(text: str, parser: str = "strict") -> list[str] | None:
    return base.read_plan(text, ACTIONS, parser)


def format_answer(actions: list[str]) -> str:
    return " ".join(actions)


def score(state: State, text: str, offgrid: str = "fail", parser: str = "strict") -> Score:
    return _planner(state).score(parse_answer(text, parser), offgrid)
