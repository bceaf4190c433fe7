"""The puzzle registry: `get(name)` returns a puzzle module, `NAMES` lists them in order.

Every puzzle module has the same interface (docs/architecture.md, "Puzzles"): LEVELS (the sides
a config may ask for), PAPER_LEVELS (the sides the paper evaluates), ILLEGAL (the kinds of
illegal action its plans can make), ACTIONS, FIELDS, WORDING (what an instruct prompt says of
the puzzle), generate, to_dict / from_dict, render, describe / parse_description /
field_values, solve / optimal_length, simulate, parse_answer / format_answer, score and
state_hash. Shared logic lives in `mgsd.puzzles.base`. This package imports nothing else of mgsd.
"""

from __future__ import annotations

from types import ModuleType

from mgsd.puzzles import frozenlake, maze, minibehaviour

NAMES = ("frozenlake", "maze", "minibehaviour")
_MODULES = {m.NAME: m for m in (frozenlake, maze, minibehaviour)}


def get(name: str) -> ModuleType:
    """The module of puzzle `name`; ValueError naming the known puzzles otherwise."""
    if name not in _MODULES:
        raise ValueError(f"unknown puzzle {name!r} (known: {', '.join(NAMES)})")
    return _MODULES[name]
