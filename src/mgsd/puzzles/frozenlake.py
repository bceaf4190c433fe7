"""FrozenLake: walk on the ice from the start to the goal without falling into a hole.

State: an N x N grid of ``S`` (start, where the agent stands), ``F`` (ice), ``H`` (hole) and
``G`` (goal); canonical dict ``{"level": N, "grid": ["SFFF", "FHFH", ...]}``.
Actions: ``U D L R``. Entering a hole is illegal (kind ``hole``); a move off the grid is illegal
(kind ``offgrid``) unless ``offgrid="stay"``, gymnasium's and VSP's rule (the agent stays put).
Success: reaching the goal.

Generation: start and goal are drawn uniformly (distinct); every other cell is a hole with a
probability drawn uniformly in `hole_fraction` per map; maps are redrawn until the goal is
reachable. Pictures are gymnasium 1.3's ``FrozenLake-v1`` rgb render (the VSP benchmark art)
pixel for pixel at its native size (`render_native`), resized for the model (`render`).
Description (also the first part of every reply)::

    size 4
    start 0 1
    goal 3 3
    holes 1 1, 2 3        (sorted; "holes none" when there are none)
"""

from __future__ import annotations

import functools
import importlib.util
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mgsd.puzzles import base
from mgsd.puzzles.base import Pos, Score, Simulation

NAME = "frozenlake"
LEVELS = (2, 12)  # the sides a config may ask for, smallest and largest
PAPER_LEVELS = (3, 8)  # the sides the MGSD paper evaluates (its presets and tests)
ILLEGAL = ("hole", "offgrid")  # the kinds of illegal action its plans can make
ACTIONS = ("U", "D", "L", "R")
FIELDS = ("level", "start", "goal", "holes")

# what an instruct prompt says of this puzzle (mgsd.model.prompts puts it together)
WORDING = base.Wording(
    rules=(
        "FrozenLake: an N x N grid of ice cells. The agent stands on the start cell and must "
        "walk to the goal cell. Some cells are holes in the ice: stepping into a hole fails, "
        "and so does moving off the grid."
    ),
    picture=(
        "In the picture the agent is the elf on the start cell (a stool), the goal is the "
        "present, the holes are dark holes in the ice."
    ),
    actions="Actions: U (up), D (down), L (left), R (right).",
    state_format=(
        "State format, one item per line: 'size N', 'start r c', 'goal r c', and 'holes r c, "
        "r c, ...' listing every hole sorted ('holes none' when there is none)."
    ),
    answer_format="Answer format: the moves separated by spaces, e.g. <answer>R R D L</answer>.",
)

TILES = "SFHG"


@dataclass(frozen=True)
class State:
    level: int
    grid: tuple[str, ...]

    def cells(self, kind: str) -> list[Pos]:
        return [(r, c) for r, row in enumerate(self.grid) for c, ch in enumerate(row) if ch == kind]

    @property
    def start(self) -> Pos:
        return self.cells("S")[0]

    @property
    def goal(self) -> Pos:
        return self.cells("G")[0]


def _step(state: State, pos: Pos, action: str, offgrid: str) -> tuple[Pos, str]:
    nxt = base.step_pos(pos, action)
    if not base.inside(nxt, state.level):
        return (pos, "") if offgrid == "stay" else (pos, "offgrid")
    if state.grid[nxt[0]][nxt[1]] == "H":
        return pos, "hole"
    return nxt, ""


def _planner_uncached(state: State) -> base.Planner:
    goal = state.goal
    return base.Planner(state.start, ACTIONS, functools.partial(_step, state), lambda p: p == goal)


_planner = functools.lru_cache(maxsize=4096)(_planner_uncached)


# ---------------------------------------------------------------- generation and dicts


def generate(level: int, seed: int, hole_fraction: tuple[float, float] = (0.2, 0.2)) -> State:
    """A random solvable map: start and goal anywhere, each other cell a hole with probability p.

    p is drawn in `hole_fraction` per map; 0.2 gives VSP's realised 14-19% holes (sides 3-8).
    """
    if level < 2:
        raise ValueError(f"frozenlake: level {level} is below 2")
    lo, hi = hole_fraction
    if not 0 <= lo <= hi < 1:
        raise ValueError(f"frozenlake: hole_fraction {hole_fraction} needs 0 <= low <= high < 1")
    rng = random.Random(seed)
    cells = [(r, c) for r in range(level) for c in range(level)]
    while True:
        p = rng.uniform(lo, hi)
        start, goal = rng.sample(cells, 2)
        rows = [["H" if rng.random() < p else "F" for _ in range(level)] for _ in range(level)]
        rows[start[0]][start[1]], rows[goal[0]][goal[1]] = "S", "G"
        state = State(level, tuple("".join(row) for row in rows))
        if _planner_uncached(state).optimal_length is not None:
            return state


def to_dict(state: State) -> dict:
    return {"level": state.level, "grid": list(state.grid)}


def from_dict(d: dict) -> State:
    base.check_keys(d, NAME, ("level", "grid"))
    level = base.check_level(d["level"], NAME, 2)
    grid = d["grid"]
    if not isinstance(grid, (list, tuple)) or not all(isinstance(row, str) for row in grid):
        raise ValueError(f"frozenlake state: grid must be a list of strings, got {grid!r}")
    if len(grid) != level:
        raise ValueError(f"frozenlake state: grid has {len(grid)} rows, level is {level}")
    for r, row in enumerate(grid):
        if len(row) != level:
            raise ValueError(f"frozenlake state: grid row {r} has {len(row)} cells, not {level}")
        if bad := set(row) - set(TILES):
            raise ValueError(f"frozenlake state: grid row {r} has bad character {min(bad)!r}")
    state = State(level, tuple(grid))
    for kind, name in (("S", "start"), ("G", "goal")):
        if len(found := state.cells(kind)) != 1:
            raise ValueError(f"frozenlake state: {len(found)} {name} cells ({kind}), need one")
    if optimal_length(state) is None:
        raise ValueError("frozenlake state: the goal is unreachable from the start")
    return state


def state_hash(state: State) -> str:
    return base.state_hash(to_dict(state))


# ---------------------------------------------------------------- pictures


@functools.cache
def _tiles(cell: int) -> dict[str, np.ndarray]:
    """One (cell, cell, 3) tile per letter, made by the pygame calls of gymnasium's renderer.

    Every blit and grid line of ``FrozenLakeEnv._render_gui`` stays inside its cell, and the
    agent (elf facing down before any step) stands on the start, so a map is a mosaic of four
    tiles.
    """
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame prints a banner otherwise
    import pygame

    spec = importlib.util.find_spec("gymnasium")
    img = Path(spec.submodule_search_locations[0]) / "envs" / "toy_text" / "img"

    def art(name: str) -> pygame.Surface:
        return pygame.transform.scale(pygame.image.load(str(img / name)), (cell, cell))

    layers = {"F": [], "H": ["hole.png"], "G": ["goal.png"], "S": ["stool.png"]}
    tiles = {}
    for letter, names in layers.items():
        surface = pygame.Surface((cell, cell))
        for name in ["ice.png", *names]:
            surface.blit(art(name), (0, 0))
        pygame.draw.rect(surface, (180, 200, 230), (0, 0, cell, cell), 1)
        if letter == "S":
            surface.blit(art("elf_down.png"), (0, 0))
        tiles[letter] = pygame.surfarray.array3d(surface).transpose(1, 0, 2).copy()
    return tiles


def render_native(state: State) -> np.ndarray:
    """gymnasium's rgb_array render of the start state: (H, W, 3) uint8, 64 px cells up to N=8."""
    side = min(64 * state.level, 512)
    cell = side // state.level
    tiles = _tiles(cell)
    image_HW3 = np.zeros((side, side, 3), dtype=np.uint8)
    for r, row in enumerate(state.grid):
        for c, letter in enumerate(row):
            image_HW3[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = tiles[letter]
    return image_HW3


def render(state: State, size: int = 256) -> Image.Image:
    return base.resize(Image.fromarray(render_native(state)), size)


# ---------------------------------------------------------------- text


def field_values(state: State) -> dict:
    holes = tuple(sorted(state.cells("H")))
    return {"level": state.level, "start": state.start, "goal": state.goal, "holes": holes}


def describe(state: State) -> str:
    v = field_values(state)
    return (
        f"size {v['level']}\nstart {base.fmt_pos(v['start'])}\ngoal {base.fmt_pos(v['goal'])}\n"
        f"holes {base.fmt_cells(v['holes'])}"
    )


def parse_description(text: str) -> dict:
    return base.read_fields(text, {"start": "start", "goal": "goal"}, ("holes",))


_TILE_WORDS = {"S": "the start, where the agent stands", "F": "ice", "H": "a hole", "G": "the goal"}


def questions(state: State) -> list[tuple[str, str]]:
    """Generic questions about the picture and their answers, in words that are not the
    reply's: the size, the start and the goal, the number of holes, every cell."""
    holes = len(state.cells("H"))
    qa = [
        base.size_question(state.level),
        base.where_question("the agent", state.start),
        base.where_question("the goal", state.goal),
        ("How many holes are in the ice?", str(holes)),
    ]
    for r, row in enumerate(state.grid):
        for c, letter in enumerate(row):
            qa.append((f"What is at {base.say_cell((r, c))}?", _TILE_WORDS[letter].capitalize()))
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
