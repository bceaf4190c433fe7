"""What the three puzzles share: plans as graph search, scores, answer parsing, hashing.

A puzzle module describes one instance as a small deterministic graph: internal agent states
(a cell, or a cell plus what the agent carries), a `step(s, action, offgrid) -> (s', kind)`
function where `kind` is ``""`` for a legal action and an illegal kind otherwise, and a goal
test. `Planner` turns that into BFS distances to the goal (computed once per instance), one
optimal plan, plan execution and the metrics:

- a plan runs from the start and stops at the first success or the first illegal action;
- success (SR); exact match (EM): success after exactly d*(s0) actions;
- progress rate (PR): k / d*(s0), k = the longest prefix of legal actions each of which lowers
  the remaining optimal length by exactly one (so EM iff PR == 1).

Answers are read from the **last** ``<answer>...</answer>`` block of a reply (tags are
case-insensitive); parsing never raises and returns None when there is no readable plan. That is
the `strict` parser; `paper` is the lenient reading of the MGSD paper's evaluator (`PARSERS`,
`read_plan`), kept so that our numbers can be set beside published ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

Pos = tuple[int, int]
MOVES: dict[str, Pos] = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
OFFGRID_MODES = ("fail", "stay")
MAX_LEVEL = 32  # sanity bound on grid sides read from outside data
RESAMPLE = Image.Resampling.BICUBIC  # the one resize filter used for every picture


@dataclass(frozen=True)
class Wording:
    """What an instruct prompt says of one puzzle, sentence by sentence (each module's WORDING;
    `mgsd.model.prompts` assembles the prompts from it)."""

    rules: str  # the puzzle's name, goal and what fails
    picture: str  # how the picture shows the agent, the goal and the obstacles
    actions: str  # the action letters and their meaning
    state_format: str  # how a state is written, line by line
    answer_format: str  # how a plan is written inside <answer>...</answer>


@dataclass(frozen=True)
class Simulation:
    """The outcome of executing a plan.

    `executed` counts the actions applied (up to and including the one that succeeded);
    `illegal_index` is the position of the first illegal action (None when there is none) and
    `illegal_kind` its kind (``""`` when none); `position` is the agent's cell at the stop.
    """

    success: bool
    executed: int
    illegal_index: int | None
    illegal_kind: str
    position: Pos


@dataclass(frozen=True)
class Score:
    """The metrics of one reply. `actions` is the parsed plan (None when unparsed)."""

    parsed: bool
    success: bool
    exact_match: bool
    progress_rate: float
    illegal_kind: str
    actions: tuple[str, ...] | None
    executed: int
    optimal_length: int


Step = Callable[[Any, str, str], tuple[Any, str]]


class Planner:
    """One puzzle instance as a graph: BFS distances to the goal, optimal plans, execution.

    `step(s, action, offgrid)` returns the next internal state and ``""``, or (s, kind) for an
    illegal action; `is_goal(s)` marks the goal states; `position(s)` gives the agent's cell.
    Distances cover every state reachable from `start` (unreachable-to-goal states are absent).
    """

    def __init__(
        self,
        start: Hashable,
        actions: Sequence[str],
        step: Step,
        is_goal: Callable[[Any], bool],
        position: Callable[[Any], Pos] = lambda s: s,
    ):
        self.start, self.actions, self.step = start, tuple(actions), step
        self.is_goal, self.position = is_goal, position
        self.distance = self._distances()

    def _distances(self) -> dict[Any, int]:
        preds: dict[Any, list[Any]] = {self.start: []}
        queue = [self.start]
        for s in queue:  # forward search: reachable states and reversed edges
            if self.is_goal(s):
                continue
            for a in self.actions:
                t, kind = self.step(s, a, "fail")
                if kind:
                    continue
                if t not in preds:
                    preds[t] = []
                    queue.append(t)
                preds[t].append(s)
        dist = {s: 0 for s in queue if self.is_goal(s)}
        frontier = list(dist)
        for s in frontier:  # backward BFS from the goal states
            for p in preds[s]:
                if p not in dist:
                    dist[p] = dist[s] + 1
                    frontier.append(p)
        return dist

    @property
    def optimal_length(self) -> int | None:
        return self.distance.get(self.start)

    def solve(self) -> list[str]:
        """One optimal plan: at each state the first action (in `actions` order) that helps."""
        if self.optimal_length is None:
            raise ValueError("the goal cannot be reached from the start")
        s, plan = self.start, []
        while self.distance[s] > 0:
            for a in self.actions:
                t, kind = self.step(s, a, "fail")
                if not kind and self.distance.get(t) == self.distance[s] - 1:
                    s = t
                    plan.append(a)
                    break
        return plan

    def run(self, actions: Sequence[str], offgrid: str = "fail") -> tuple[Simulation, int]:
        """Execute a plan; returns the simulation and the progress prefix length k."""
        if offgrid not in OFFGRID_MODES:
            raise ValueError(f"offgrid: {offgrid!r} is not one of {OFFGRID_MODES}")
        if unknown := [a for a in actions if a not in self.actions]:
            raise ValueError(f"unknown action {unknown[0]!r} (actions: {' '.join(self.actions)})")
        s, k, progressing = self.start, 0, True
        for i, a in enumerate(actions):
            t, kind = self.step(s, a, offgrid)
            if kind:
                return Simulation(False, i, i, kind, self.position(s)), k
            d_s, d_t = self.distance.get(s), self.distance.get(t)
            progressing = progressing and d_s is not None and d_t == d_s - 1
            k += int(progressing)
            s = t
            if self.is_goal(s):
                return Simulation(True, i + 1, None, "", self.position(s)), k
        return Simulation(False, len(actions), None, "", self.position(s)), k

    def score(self, actions: Sequence[str] | None, offgrid: str = "fail") -> Score:
        d_star = self.optimal_length or 0
        if actions is None:
            return Score(
                parsed=False, success=False, exact_match=False, progress_rate=0.0,
                illegal_kind="", actions=None, executed=0, optimal_length=d_star,
            )  # fmt: skip
        sim, k = self.run(actions, offgrid)
        return Score(
            parsed=True,
            success=sim.success,
            exact_match=sim.success and sim.executed == d_star,
            progress_rate=k / d_star if d_star else float(sim.success),
            illegal_kind=sim.illegal_kind,
            actions=tuple(actions),
            executed=sim.executed,
            optimal_length=d_star,
        )


def step_pos(pos: Pos, action: str) -> Pos:
    dr, dc = MOVES[action]
    return pos[0] + dr, pos[1] + dc


def inside(pos: Pos, level: int) -> bool:
    return 0 <= pos[0] < level and 0 <= pos[1] < level


def neighbours(pos: Pos, level: int) -> list[Pos]:
    return [q for a in MOVES if inside(q := step_pos(pos, a), level)]


# ---------------------------------------------------------------- answers

# the answer tags, as every reader of replies finds them (any case, spaces inside the brackets)
OPEN_ANSWER = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
CLOSE_ANSWER = re.compile(r"<\s*/\s*answer\s*>", re.IGNORECASE)
_WORDS = {"up": "U", "down": "D", "left": "L", "right": "R", "pick": "PICK", "drop": "DROP"}


def answer_block(text: Any) -> str | None:
    """The inside of the last complete ``<answer>...</answer>`` block, or None.

    The last opening tag that is followed by a closing tag starts the block, and the first
    closing tag after it ends it, so nested tags and earlier or later unclosed tags do not
    swallow the final answer.
    """
    if not isinstance(text, str):
        return None
    close = _last(CLOSE_ANSWER.finditer(text))
    if close is None:
        return None
    opening = _last(OPEN_ANSWER.finditer(text, 0, close.start()))
    if opening is None:
        return None
    end = CLOSE_ANSWER.search(text, opening.end())
    return text[opening.end() : end.start()]


def _last(matches: Iterable[re.Match]) -> re.Match | None:
    last = None
    for last in matches:  # noqa: B007 (the loop only walks to the last match)
        pass
    return last


def parse_plan(text: Any, actions: Sequence[str]) -> list[str] | None:
    """Read the plan of the last answer block, using only tokens in `actions`.

    Tokens are separated by whitespace and/or commas (one pair of enclosing brackets is
    ignored). A token is a word (up/down/left/right/pick/drop, any case) or a run of move
    letters U D L R in any case (``"RDDR"`` is four moves). An empty block or any other token
    makes the block unreadable: None.
    """
    block = answer_block(text)
    if block is None:
        return None
    block = block.strip()
    if len(block) >= 2 and block[0] + block[-1] in ("[]", "()"):
        block = block[1:-1]
    plan: list[str] = []
    for token in re.split(r"[\s,]+", block):
        if not token:
            continue
        low = token.lower()
        if low in _WORDS:
            plan.append(_WORDS[low])
        elif set(low) <= set("udlr"):
            plan.extend(low.upper())
        else:
            return None
    if not plan or any(a not in actions for a in plan):
        return None
    return plan


PARSERS = ("strict", "paper")
_LETTERS = re.compile(r"[A-Za-z]+")
_MOVE_RUN = re.compile(r"[UDLR]+")


def first_answer_block(text: Any) -> str | None:
    """The inside of the paper's answer block: from the **first** opening tag to the next
    closing tag after it; None when there is no opening tag or it is never closed."""
    if not isinstance(text, str):
        return None
    opening = OPEN_ANSWER.search(text)
    if opening is None:
        return None
    close = CLOSE_ANSWER.search(text, opening.end())
    return None if close is None else text[opening.end() : close.start()]


def parse_plan_paper(text: Any, actions: Sequence[str]) -> list[str] | None:
    """The paper's lenient reading: every action word, in order, of its answer block
    (`first_answer_block`), or of the whole reply when that block is missing or never closed.

    An action word is a run of letters that is up/down/left/right/pick/drop (any case) or made of
    the capital move letters U D L R (``"RDD"`` is three moves); inside a closed block lowercase
    runs (``"rdd"``) count too, as in the strict parser. Every other word, and every action that
    is not in `actions`, is skipped instead of making the plan unreadable. So the state text
    ``R LR DL`` of a maze reply without an answer block reads as the moves R L R D L. None when
    no action word is found. Linear in the length of the text; never raises.
    """
    if not isinstance(text, str):
        return None
    block = first_answer_block(text)
    scope = text if block is None else block
    allowed = set(actions)
    plan: list[str] = []
    for match in _LETTERS.finditer(scope):
        word = match.group()
        low = word.lower()
        if low in _WORDS:
            found = [_WORDS[low]]
        elif _MOVE_RUN.fullmatch(word) or (block is not None and set(low) <= set("udlr")):
            found = list(word.upper())
        else:
            continue
        plan.extend(a for a in found if a in allowed)
    return plan or None


def read_plan(text: Any, actions: Sequence[str], parser: str = "strict") -> list[str] | None:
    """The plan of a reply under `parser`: `strict` (`parse_plan`) or `paper`
    (`parse_plan_paper`). Never raises on any text; ValueError for an unknown parser."""
    if parser == "strict":
        return parse_plan(text, actions)
    if parser == "paper":
        return parse_plan_paper(text, actions)
    raise ValueError(f"parser: {parser!r} is not one of {', '.join(PARSERS)}")


# ---------------------------------------------------------------- the stated state


def stated_state_text(reply: Any) -> str:
    """The part of a reply before its last ``<answer>`` tag (all of it when there is none)."""
    if not isinstance(reply, str):
        return ""
    starts = [m.start() for m in OPEN_ANSWER.finditer(reply)]
    return reply[: starts[-1]] if starts else reply


def parse_stated_state(puzzle: Any, reply: Any) -> dict:
    """The state fields a reply states before its last answer, read by the puzzle module
    `puzzle` (its `parse_description`); ``{}`` when none. Never raises."""
    try:
        fields = puzzle.parse_description(stated_state_text(reply))
    except ValueError:  # e.g. a number no int() takes; anything else is a bug and surfaces
        return {}
    return fields if isinstance(fields, dict) else {}


def stated_fields(puzzle: Any, state: Any, reply: Any) -> dict[str, bool]:
    """For each field of the true `state` (`puzzle.field_values`), whether the reply states it
    right before its last answer (`parse_stated_state`)."""
    stated = parse_stated_state(puzzle, reply)
    return {k: stated.get(k) == v for k, v in puzzle.field_values(state).items()}


# ---------------------------------------------------------------- descriptions

_NUM = r"\d{1,4}"  # bounded: int() refuses very long digit strings, and no grid is that big
_CELL = rf"({_NUM})[ \t]*[ ,][ \t]*({_NUM})"  # "r c" (or "r,c"), never across lines
_CELLS = rf"none|{_NUM}[ \t]+{_NUM}(?:[ \t]*,[ \t]*{_NUM}[ \t]+{_NUM})*"


def fmt_pos(pos: Pos) -> str:
    return f"{pos[0]} {pos[1]}"


def fmt_cells(cells: Iterable[Pos]) -> str:
    return ", ".join(fmt_pos(p) for p in sorted(cells)) or "none"


_BLANKS = re.compile(r"[ \t]+")


def squeeze_blanks(text: str) -> str:
    """Every run of spaces and tabs as one space: the line patterns below then match in time
    linear in the text (adjacent optional-blank parts backtrack quadratically on long runs, and
    models do write long runs of spaces)."""
    return _BLANKS.sub(" ", text)


def find_line(text: str, key: str, pattern: str) -> re.Match | None:
    """The first line ``key[:] <pattern>`` (key case-insensitive), or None. Give it text whose
    blanks are squeezed (`squeeze_blanks`)."""
    regex = rf"^[ \t]*{key}[ \t]*:?[ \t]*({pattern})[ \t]*$"
    return re.search(regex, text, re.IGNORECASE | re.MULTILINE)


def read_fields(text: Any, scalars: dict[str, str], cell_lists: Sequence[str]) -> dict:
    """Read ``size N``, single cells ``key r c`` and cell lists ``key r c, r c`` from text.

    `scalars` maps a field name to its line key (``{"start": "start"}``); ``size`` gives the
    field ``level``. Values: int, (r, c), and a sorted tuple of distinct cells.
    """
    if not isinstance(text, str):
        return {}
    text = squeeze_blanks(text)
    out: dict[str, Any] = {}
    if m := find_line(text, "size", _NUM):
        out["level"] = int(m.group(1))
    for field, key in scalars.items():
        if m := find_line(text, key, _CELL):
            out[field] = (int(m.group(2)), int(m.group(3)))
    for field in cell_lists:
        if m := find_line(text, field, _CELLS):
            cells = re.findall(rf"({_NUM})[ \t]+({_NUM})", m.group(1))
            out[field] = tuple(sorted({(int(r), int(c)) for r, c in cells}))
    return out


# ---------------------------------------------------------------- canonical dicts


# ---------------------------------------------------------------- perception questions


def say_cell(pos: Pos) -> str:
    """A cell in the words of the perception questions (not the reply's ``r c`` form)."""
    return f"row {pos[0]}, column {pos[1]}"


def size_question(level: int) -> tuple[str, str]:
    return "How many rows and columns does the grid have?", f"{level} by {level}"


def where_question(thing: str, pos: Pos) -> tuple[str, str]:
    return f"Where is {thing}?", say_cell(pos).capitalize()


# ---------------------------------------------------------------- canonical dicts


def state_hash(canonical: dict) -> str:
    """sha1 of the canonical dict as sorted, compact JSON."""
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()


def check_keys(d: Any, puzzle: str, keys: Sequence[str]) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{puzzle} state: expected a dict, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{puzzle} state: missing key {missing[0]!r}")
    unknown = sorted(set(map(str, d)) - set(keys))
    if unknown:
        raise ValueError(f"{puzzle} state: unknown key {unknown[0]!r}")


def check_level(value: Any, puzzle: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{puzzle} state: level must be an integer, got {value!r}")
    if not minimum <= value <= MAX_LEVEL:
        raise ValueError(f"{puzzle} state: level {value} outside {minimum}-{MAX_LEVEL}")
    return value


def check_pos(value: Any, level: int, what: str) -> Pos:
    """A [row, col] pair inside the grid, as a tuple; ValueError naming `what` otherwise."""
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ValueError(f"{what}: expected [row, col] integers, got {value!r}")
    pos = (value[0], value[1])
    if not inside(pos, level):
        raise ValueError(f"{what}: {list(pos)} is outside the {level}x{level} grid")
    return pos


# ---------------------------------------------------------------- pictures


def resize(image: Image.Image, size: int) -> Image.Image:
    """The model-facing picture: RGB, `size` x `size`, one filter for every puzzle."""
    image = image.convert("RGB")
    if image.size == (size, size):
        return image
    return image.resize((size, size), RESAMPLE)
