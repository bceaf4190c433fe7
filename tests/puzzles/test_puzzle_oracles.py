"""Independent oracles: networkx shortest paths for all puzzles, gymnasium for FrozenLake.

The graphs below are built from the canonical dicts with the puzzle rules (each puzzle module's docstring),
sharing no code with mgsd.puzzles.
"""

from __future__ import annotations

import os
import random
from collections import Counter

import networkx as nx
import numpy as np
import pytest
from test_puzzle_contract import SIDES  # same folder: the sides the paper evaluates

from mgsd import puzzles
from mgsd.puzzles import frozenlake

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # gymnasium's pygame.init() needs no screen
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # ... nor a sound card
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

DELTA = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
SIDE_OF = {"U": "north", "D": "south", "L": "west", "R": "east"}


def lake_graph(d: dict):
    grid, n = d["grid"], d["level"]
    g = nx.DiGraph()
    cells = [(r, c) for r in range(n) for c in range(n) if grid[r][c] != "H"]
    for r, c in cells:
        for a, (dr, dc) in DELTA.items():
            if (r + dr, c + dc) in cells:
                g.add_edge((r, c), (r + dr, c + dc), action=a)
    find = {grid[r][c]: (r, c) for r, c in cells}
    return g, find["S"], find["G"]


def maze_graph(d: dict):
    g, n = nx.DiGraph(), d["level"]
    for r in range(n):
        for c in range(n):
            for a, (dr, dc) in DELTA.items():
                if not d["walls"][r][c][SIDE_OF[a]]:
                    g.add_edge((r, c), (r + dr, c + dc), action=a)
    return g, tuple(d["start"]), tuple(d["goal"])


def room_graph(d: dict):
    g, n = nx.DiGraph(), d["level"]
    table, printer = {tuple(p) for p in d["table"]}, tuple(d["printer"])

    def touches(cell, targets) -> bool:
        return any(abs(cell[0] - t[0]) + abs(cell[1] - t[1]) == 1 for t in targets)

    for r in range(n):
        for c in range(n):
            if (r, c) in table:
                continue
            for carrying in (False, True):
                for a, (dr, dc) in DELTA.items():
                    q = (r + dr, c + dc)
                    blocked = q in table or (q == printer and not carrying)
                    if 0 <= q[0] < n and 0 <= q[1] < n and not blocked:
                        g.add_edge(((r, c), carrying), (q, carrying), action=a)
                if not carrying and touches((r, c), [printer]):
                    g.add_edge(((r, c), False), ((r, c), True), action="PICK")
                if carrying and touches((r, c), table):
                    g.add_edge(((r, c), True), "done", action="DROP")
    return g, (tuple(d["agent"]), False), "done"


GRAPHS = {"frozenlake": lake_graph, "maze": maze_graph, "minibehaviour": room_graph}


def oracle_exact(graph, start, goal, plan: list[str], d_star: int) -> bool:
    node = start
    for i, a in enumerate(plan):
        nxt = [v for v in graph.successors(node) if graph.edges[node, v]["action"] == a]
        if not nxt:
            return False
        node = nxt[0]
        if node == goal:
            return i + 1 == d_star
    return False


@pytest.mark.parametrize("name", puzzles.NAMES)
def test_optimal_length_matches_networkx_and_one_action_changes_break_exact_match(name):
    module, build = puzzles.get(name), GRAPHS[name]
    rng = random.Random(0)
    alternatives = 0
    for level in SIDES[name]:
        for seed in range(60):
            state = module.generate(level, seed)
            graph, start, goal = build(module.to_dict(state))
            d_star = nx.shortest_path_length(graph, start, goal)
            assert module.optimal_length(state) == d_star
            plan = module.solve(state)
            assert oracle_exact(graph, start, goal, plan, d_star)
            i = rng.randrange(len(plan))
            for a in module.ACTIONS:
                if a == plan[i]:
                    continue
                changed = plan[:i] + [a] + plan[i + 1 :]
                text = f"<answer>{module.format_answer(changed)}</answer>"
                expected = oracle_exact(graph, start, goal, changed, d_star)
                assert module.score(state, text).exact_match == expected
                alternatives += expected
    if name != "minibehaviour":  # a changed move changes the end cell: never optimal
        assert alternatives == 0


def gym_run(env, plan: list[str]) -> tuple[int | None, float, int]:
    """(index of the terminating step or None, last reward, last cell) of a gymnasium run."""
    index = {"L": 0, "D": 1, "R": 2, "U": 3}
    env.reset(seed=0)
    cell, reward = env.s, 0.0
    for i, a in enumerate(plan):
        cell, reward, terminated, _, _ = env.step(index[a])
        if terminated:
            return i, reward, cell
    return None, reward, cell


def test_frozenlake_stay_rule_agrees_with_gymnasium_on_random_plans():
    from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv

    rng = random.Random(1)
    outcomes = Counter()
    for level in range(3, 9):
        for seed in range(8):
            state = frozenlake.generate(level, seed)
            env = FrozenLakeEnv(desc=list(state.grid), is_slippery=False)
            for _ in range(50):
                plan = [rng.choice("UDLR") for _ in range(rng.randrange(1, 3 * level))]
                sim = frozenlake.simulate(state, plan, offgrid="stay")
                stop, reward, cell = gym_run(env, plan)
                if stop is not None and reward == 1:
                    assert (sim.success, sim.executed, sim.illegal_kind) == (True, stop + 1, "")
                    outcomes["goal"] += 1
                elif stop is not None:
                    assert (sim.success, sim.illegal_index, sim.illegal_kind) == (
                        False,
                        stop,
                        "hole",
                    )
                    outcomes["hole"] += 1
                else:
                    assert (sim.success, sim.illegal_kind, sim.executed) == (False, "", len(plan))
                    assert sim.position == divmod(int(cell), level)
                    outcomes["still walking"] += 1
    assert sum(outcomes.values()) == 2400 and min(outcomes.values()) > 100, outcomes


def test_frozenlake_render_is_gymnasiums_pixel_for_pixel():
    import gymnasium as gym

    for level in (2, 3, 5, 8, 9, 12):  # above 8 gymnasium shrinks cells to fit 512 px
        for seed in range(2):
            state = frozenlake.generate(level, seed)
            env = gym.make(
                "FrozenLake-v1", desc=list(state.grid), is_slippery=False, render_mode="rgb_array"
            )
            env.reset(seed=0)
            reference_HW3 = env.render()
            env.close()
            ours_HW3 = frozenlake.render_native(state)
            assert ours_HW3.shape == reference_HW3.shape and ours_HW3.dtype == np.uint8
            assert np.array_equal(ours_HW3, reference_HW3)
