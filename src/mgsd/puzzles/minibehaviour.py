"""MiniBehaviour (installing a printer): pick up the printer and put it down next to the table.

State: an N x N floor, a table of 2 rows x 3 columns (6 cells), one printer cell and the agent;
canonical dict ``{"level": N, "agent": [r, c], "printer": [r, c], "table": [[r, c] x 6]}``
(table cells sorted). Actions: ``U D L R PICK DROP``. Illegal kinds: ``table`` (moving onto a
table cell: never enterable), ``printer`` (moving onto the printer's cell before it is
picked up; afterwards that cell is floor), ``offgrid`` (unless ``offgrid="stay"``),
``bad_pick`` (PICK while carrying or not 4-adjacent to the printer) and ``bad_drop`` (DROP
while not carrying or not 4-adjacent to a table cell). Pick and drop may happen on the same
cell. Success: a legal DROP. The optimal length counts PICK and DROP and is found by BFS over
(cell, carrying).

Generation follows the VisualPlanning test split: the table's top-left cell, then the printer,
then the agent are drawn uniformly among the cells still free. Every such layout is solvable:
the floor minus a 2 x 3 table is connected, and every part of it cut off by the printer touches
the printer, so `from_dict`'s solvability check is only a guard.
Picture: black floor with grey grid lines, tan table cells, a white printer icon and a red
triangle (pointing right) for the agent. Description::

    size 5
    agent 2 4
    printer 1 1
    table 3 1, 3 2, 3 3, 4 1, 4 2, 4 3
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from mgsd.puzzles import base
from mgsd.puzzles.base import Pos, Score, Simulation

NAME = "minibehaviour"
LEVELS = (4, 12)  # the sides a config may ask for, smallest and largest
PAPER_LEVELS = (5, 6)  # the sides the MGSD paper evaluates (its presets and tests)
ILLEGAL = ("table", "bad_pick", "bad_drop", "printer", "offgrid")  # kinds of illegal action
ACTIONS = ("U", "D", "L", "R", "PICK", "DROP")
FIELDS = ("level", "agent", "printer", "table")

# what an instruct prompt says of this puzzle (mgsd.model.prompts puts it together)
WORDING = base.Wording(
    rules=(
        "MiniBehaviour (install the printer): an N x N floor with a table of 2 rows x 3 "
        "columns and one printer. The agent must walk next to the printer, pick it up, walk "
        "next to the table and drop the printer there ('next to' means sharing a side). "
        "Table cells can never be entered; the printer's cell is blocked until the printer "
        "is picked up. Moving off the grid fails. The task is done by the first legal drop."
    ),
    picture=(
        "In the picture the floor is black with grey grid lines, the table cells are tan, "
        "the printer is the white icon and the agent is the red triangle."
    ),
    actions=(
        "Actions: U (up), D (down), L (left), R (right), PICK (pick up the printer from a "
        "cell next to it), DROP (put the carried printer down from a cell next to the "
        "table)."
    ),
    state_format=(
        "State format, one item per line: 'size N', 'agent r c', 'printer r c', and 'table r "
        "c, r c, ...' listing the six table cells sorted."
    ),
    answer_format=(
        "Answer format: the actions separated by commas, e.g. <answer>U,R,PICK,D,DROP</answer>."
    ),
)

TABLE_ROWS, TABLE_COLS = 2, 3
CELL_PX = 64
FLOOR, LINE, TAN, WHITE, RED = (
    (0, 0, 0),
    (110, 110, 110),
    (210, 180, 140),
    (255, 255, 255),
    (230, 0, 0),
)
WAITING, CARRYING, DONE = 0, 1, 2  # phases of the internal state (cell, phase)


@dataclass(frozen=True)
class State:
    level: int
    agent: Pos
    printer: Pos
    table: tuple[Pos, ...]  # 6 cells, sorted


def _planner_uncached(state: State) -> base.Planner:
    n, table = state.level, frozenset(state.table)
    pick_cells = set(base.neighbours(state.printer, n)) - table
    drop_cells = {q for t in table for q in base.neighbours(t, n)} - table

    def step(s: tuple[Pos, int], action: str, offgrid: str) -> tuple[tuple[Pos, int], str]:
        pos, phase = s
        if action == "PICK":
            return (
                ((pos, CARRYING), "") if phase == WAITING and pos in pick_cells else (s, "bad_pick")
            )
        if action == "DROP":
            return ((pos, DONE), "") if phase == CARRYING and pos in drop_cells else (s, "bad_drop")
        nxt = base.step_pos(pos, action)
        if not base.inside(nxt, n):
            return (s, "") if offgrid == "stay" else (s, "offgrid")
        if nxt in table:
            return s, "table"
        if phase == WAITING and nxt == state.printer:
            return s, "printer"
        return (nxt, phase), ""

    return base.Planner(
        (state.agent, WAITING), ACTIONS, step, lambda s: s[1] == DONE, position=lambda s: s[0]
    )


_planner = functools.lru_cache(maxsize=4096)(_planner_uncached)


# ---------------------------------------------------------------- generation and dicts


def _table_at(top: int, left: int) -> tuple[Pos, ...]:
    return tuple((top + r, left + c) for r in range(TABLE_ROWS) for c in range(TABLE_COLS))


def generate(level: int, seed: int) -> State:
    if level < TABLE_COLS:
        raise ValueError(f"minibehaviour: level {level} is below {TABLE_COLS}")
    rng = random.Random(seed)
    table = _table_at(rng.randrange(level - TABLE_ROWS + 1), rng.randrange(level - TABLE_COLS + 1))
    free = [(r, c) for r in range(level) for c in range(level) if (r, c) not in table]
    printer, agent = rng.sample(free, 2)
    return State(level, agent, printer, table)


def to_dict(state: State) -> dict:
    return {
        "level": state.level,
        "agent": list(state.agent),
        "printer": list(state.printer),
        "table": [list(p) for p in state.table],
    }


def from_dict(d: dict) -> State:
    base.check_keys(d, NAME, ("level", "agent", "printer", "table"))
    n = base.check_level(d["level"], NAME, TABLE_COLS)
    agent = base.check_pos(d["agent"], n, "minibehaviour state: agent")
    printer = base.check_pos(d["printer"], n, "minibehaviour state: printer")
    cells = d["table"]
    if not isinstance(cells, (list, tuple)) or len(cells) != TABLE_ROWS * TABLE_COLS:
        raise ValueError(f"minibehaviour state: table must be a list of 6 cells, got {cells!r}")
    table = tuple(sorted(base.check_pos(p, n, "minibehaviour state: table cell") for p in cells))
    if table != _table_at(*table[0]):
        raise ValueError(
            f"minibehaviour state: table cells {[list(p) for p in table]} are not a contiguous "
            "block of 2 rows x 3 columns"
        )
    for clash, what in (
        (agent == printer, f"agent and printer share the cell {list(agent)}"),
        (agent in table, f"agent {list(agent)} is on the table"),
        (printer in table, f"printer {list(printer)} is on the table"),
    ):
        if clash:
            raise ValueError(f"minibehaviour state: objects overlap: {what}")
    state = State(n, agent, printer, table)
    if optimal_length(state) is None:
        raise ValueError("minibehaviour state: the task cannot be solved from this state")
    return state


def state_hash(state: State) -> str:
    return base.state_hash(to_dict(state))


# ---------------------------------------------------------------- pictures


def render(state: State, size: int = 256) -> Image.Image:
    side = state.level * CELL_PX
    image = Image.new("RGB", (side, side), FLOOR)
    draw = ImageDraw.Draw(image)

    def box(pos: Pos, x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
        r, c = pos
        return (
            (c + x0) * CELL_PX,
            (r + y0) * CELL_PX,
            (c + x1) * CELL_PX - 1,
            (r + y1) * CELL_PX - 1,
        )

    for p in state.table:
        draw.rectangle(box(p, 0, 0, 1, 1), fill=TAN)
    draw.rectangle(box(state.printer, 0.12, 0.34, 0.88, 0.80), fill=WHITE)  # body
    draw.rectangle(box(state.printer, 0.28, 0.14, 0.72, 0.40), fill=WHITE)  # paper
    draw.rectangle(box(state.printer, 0.25, 0.58, 0.75, 0.64), fill=LINE)  # output slot
    for i in range(state.level + 1):
        edge = min(i * CELL_PX, side - 1)
        draw.line((edge, 0, edge, side), fill=LINE, width=2)
        draw.line((0, edge, side, edge), fill=LINE, width=2)
    r, c = state.agent
    x, y = c * CELL_PX, r * CELL_PX
    tip = [(x + 0.18 * CELL_PX, y + 0.15 * CELL_PX), (x + 0.18 * CELL_PX, y + 0.85 * CELL_PX)]
    draw.polygon([*tip, (x + 0.88 * CELL_PX, y + 0.5 * CELL_PX)], fill=RED)
    return base.resize(image, size)


# ---------------------------------------------------------------- text


def field_values(state: State) -> dict:
    return {
        "level": state.level,
        "agent": state.agent,
        "printer": state.printer,
        "table": state.table,
    }


def describe(state: State) -> str:
    return (
        f"size {state.level}\nagent {base.fmt_pos(state.agent)}\n"
        f"printer {base.fmt_pos(state.printer)}\ntable {base.fmt_cells(state.table)}"
    )


def parse_description(text: str) -> dict:
    return base.read_fields(text, {"agent": "agent", "printer": "printer"}, ("table",))


def questions(state: State) -> list[tuple[str, str]]:
    """Generic questions about the picture and their answers, in words that are not the
    reply's: the size, the agent, the printer, the table's corner, every cell."""
    table = set(state.table)
    qa = [
        base.size_question(state.level),
        base.where_question("the agent", state.agent),
        base.where_question("the printer", state.printer),
        base.where_question("the top-left cell of the table", min(state.table)),
    ]
    for r in range(state.level):
        for c in range(state.level):
            pos = (r, c)
            what = (
                "The agent" if pos == state.agent else "The printer" if pos == state.printer
                else "Part of the table" if pos in table else "Floor"
            )  # fmt: skip
            qa.append((f"What is at {base.say_cell(pos)}?", what))
    return qa


# ---------------------------------------------------------------- plans


def solve(state: State) -> list[str]:
    return _planner(state).solve()


def optimal_length(state: State) -> int | None:
    """d*(s0); None when the task cannot be solved (never for a validated state)."""
    return _planner(state).optimal_length


def simulate(state: State, actions: list[str], offgrid: str = "fail") -> Simulation:
    return _planner(state).run(actions, offgrid)[0]


def parse_answer(text: str, parser: str = "strict") -> list[str] | None:
    return base.read_plan(text, ACTIONS, parser)


def format_answer(actions: list[str]) -> str:
    return ",".join(actions)


def score(state: State, text: str, offgrid: str = "fail", parser: str = "strict") -> Score:
    return _planner(state).score(parse_answer(text, parser), offgrid)
