"""From a data row to what a model sees and says, for every stage and evaluation condition.

| task | prompt | target reply |
| --- | --- | --- |
| `student` | picture + student prompt (the real task; sft_direct, distillation) | state, then plan |
| `symbolic` | state as text (symbolic pretraining, the `text` condition) | state, then plan |
| `teacher` | state as text + the reference plan (the distillation teacher) | state, then plan |
| `grounding` | picture + grounding prompt (MGSD stage 1) | the state text |
| `grounding_student` | picture + student prompt (stage 1, `grounding_prompt: student`) | the state, no end of turn |
| `oracle` | picture + student prompt, the true state forced as the reply's start | the plan |
| `perception` | picture + one generic question (stage 0 of scratch backbones) | a short answer |

A supervised stage trains one task, or a seeded mixture of them (`Mixture`, the stage's `mix`
config): each example of a batch draws its task by weight, from all training instances or from
a task's own pool (the smallest sides only, or a capped number of instances).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from mgsd import puzzles
from mgsd.config import TASKS
from mgsd.data import records
from mgsd.model import prompts
from mgsd.model.batching import Example
from mgsd.puzzles.base import stated_fields

STAGE_TASK = {
    "symbolic_pretrain": "symbolic",
    "grounding": "grounding",
    "sft_direct": "student",
    "grounding_sft": "student",
}


def stage_task(stage: str, grounding_prompt: str = "grounding") -> str:
    """The task a supervised stage trains (grounding may read the state under the student prompt)."""
    if stage == "grounding" and grounding_prompt == "student":
        return "grounding_student"
    return STAGE_TASK[stage]


CONDITION_TASK = {
    "image": "student",
    "text": "symbolic",
    "image_oracle_state": "oracle",
    "teacher": "teacher",
}


@dataclass(frozen=True)
class Instance:
    """One data row, with its state and picture decoded on first use."""

    id: str
    puzzle: str
    level: int
    state_json: str
    image_png: bytes
    solution: str

    @cached_property
    def state(self):
        return puzzles.get(self.puzzle).from_dict(json.loads(self.state_json))

    @cached_property
    def image(self) -> Image.Image:
        return Image.open(io.BytesIO(self.image_png)).convert("RGB")

    @cached_property
    def plan(self) -> list[str]:
        return puzzles.get(self.puzzle).parse_answer(f"<answer>{self.solution}</answer>") or []


def load_instances(paths: list[str]) -> list[Instance]:
    """The rows of several data files, in file order, each checked (`check_instance`) so that a
    bad row stops a stage before any model loads, with a message naming it."""
    return [inst for path in paths for inst in to_instances(records.read_data(path), path)]


def to_instances(rows: list[dict], where) -> list[Instance]:
    """Data rows (`mgsd.data.records.DATA_COLUMNS`) as checked instances; `where` names them."""
    out = []
    for r in rows:
        inst = Instance(r["id"], r["puzzle"], r["level"], r["state"], r["image"], r["solution"])
        check_instance(inst, where)
        out.append(inst)
    return out


def check_instance(inst: Instance, path) -> None:
    """RecordError naming the file, row and column when the state or the picture is unusable."""
    where = f"{path}: row {inst.id!r}"
    try:
        inst.state  # noqa: B018 (decodes and validates the state, cached)
    except (ValueError, TypeError) as e:  # bad JSON, unknown puzzle, an invalid state dict
        raise records.RecordError(f"{where}, column 'state': {e}") from None
    try:
        with Image.open(io.BytesIO(inst.image_png)) as picture:
            picture.verify()  # reads the whole file, decodes nothing
    except Exception as e:  # PIL raises many kinds on bad bytes; all mean the same here
        raise records.RecordError(
            f"{where}, column 'image': not a readable picture ({type(e).__name__}: {e})"
        ) from None


def validation_set(insts: list[Instance], n: int, seed: int) -> list[Instance]:
    """A fixed, seeded sample of `n` validation instances spread over puzzles and sides."""
    order = np.random.default_rng(seed).permutation(len(insts))
    return [insts[i] for i in order[: min(n, len(insts))]]


def make_example(
    task: str,
    inst: Instance,
    style: str,
    with_reply: bool = True,
    end: bool = True,
    variant: int = 0,
) -> Example:
    """The model input (and, for training, the target reply) of `inst` under `task`.

    `end=False` (grounding only) makes the target the state text as the start of a reply,
    without the end of the turn: the model learns to read the state and is not taught to stop
    there, so it goes on with the plan it learnt as the base model. `variant` picks the
    question of the `perception` task.
    """
    p, s = inst.puzzle, inst.state
    if task == "perception":
        qa = puzzles.get(p).questions(s)
        question, answer = qa[variant % len(qa)]
        msgs = prompts.perception_messages(p, question, style)
        return Example(msgs, answer if with_reply else None, inst.image)
    full = prompts.reply_text(p, s, style, plan=inst.plan)
    if task == "student":
        return Example(prompts.student_messages(p, style), full if with_reply else None, inst.image)
    if task == "symbolic":
        return Example(prompts.symbolic_messages(p, s, style), full if with_reply else None, None)
    if task == "teacher":
        msgs = prompts.symbolic_messages(p, s, style, plan=inst.plan)
        return Example(msgs, full if with_reply else None, None)
    if task == "grounding":
        target = prompts.grounding_reply(p, s) if end else prompts.state_prefix(p, s)
        reply = target if with_reply else None
        return Example(prompts.grounding_messages(p, style), reply, inst.image, end=end)
    if task == "grounding_student":  # the state as the start of a reply to the task's prompt
        reply = prompts.state_prefix(p, s) if with_reply else None
        return Example(prompts.student_messages(p, style), reply, inst.image, end=False)
    if task == "oracle":
        prefix = prompts.state_prefix(p, s)
        reply = full[len(prefix) :] if with_reply else None
        return Example(prompts.student_messages(p, style), reply, inst.image, prefix=prefix)
    raise ValueError(f"unknown task {task!r} ({', '.join(TASKS)})")


def task_success(task: str, inst: Instance, reply: str, variant: int = 0) -> bool:
    """Greedy validation success: the right state for grounding, the right answer for a
    perception question, a solved puzzle otherwise."""
    p = puzzles.get(inst.puzzle)
    if task == "perception":
        qa = p.questions(inst.state)
        return reply.strip() == qa[variant % len(qa)][1]
    if task in ("grounding", "grounding_student"):
        # a grounding reply is the state alone: all of it is read, answer tags included
        return all(stated_fields(p, inst.state, reply + "\n<answer></answer>").values())
    return p.score(inst.state, reply).success


# ---------------------------------------------------------------- mixtures of tasks


@dataclass(frozen=True)
class Slot:
    """One example of a batch: its task, its training instance, its variant (question)."""

    task: str
    index: int
    variant: int


class Mixture:
    """The tasks of a stage and how each example of a batch draws one, a function of
    (seed, step): `slots(ids, step)` maps the batch's instance indices to `Slot`s.

    `mix` maps a task to an entry with `weight`, `sides` (draw only from the N smallest sides
    of each puzzle; 0: all) and `instances` (draw from at most N instances, a seeded sample;
    0: all). An empty mix is the stage's one task.
    """

    def __init__(self, mix: dict, default_task: str, insts: list[Instance], seed: int):
        entries = {t: e for t, e in mix.items() if e.weight > 0} if mix else {}
        if not entries:
            self.tasks, self.weights = [default_task], np.ones(1)
            self.pools: dict[str, list[int] | None] = {default_task: None}
        else:
            self.tasks = sorted(entries)
            w = np.array([entries[t].weight for t in self.tasks], dtype=np.float64)
            self.weights = w / w.sum()
            self.pools = {t: _pool(insts, entries[t], seed, t) for t in self.tasks}
        self.seed = seed

    def slots(self, ids: list[int], step: int) -> list[Slot]:
        rng = np.random.default_rng([self.seed, step, 0x6D6978])
        picks = rng.choice(len(self.tasks), size=len(ids), p=self.weights)
        variants = rng.integers(0, 2**31, size=len(ids))
        out = []
        for i, k, v in zip(ids, picks, variants, strict=True):
            task, pool = self.tasks[k], self.pools[self.tasks[k]]
            out.append(Slot(task, i if pool is None else pool[i % len(pool)], int(v)))
        return out


def _pool(insts: list[Instance], entry, seed: int, task: str) -> list[int] | None:
    """The instance indices a task draws from (None: all)."""
    if not entry.sides and not entry.instances:
        return None
    keep = list(range(len(insts)))
    if entry.sides:
        levels: dict[str, set[int]] = {}
        for x in insts:
            levels.setdefault(x.puzzle, set()).add(x.level)
        small = {p: set(sorted(lv)[: entry.sides]) for p, lv in levels.items()}
        keep = [i for i in keep if insts[i].level in small[insts[i].puzzle]]
    if entry.instances and len(keep) > entry.instances:
        order = np.random.default_rng([seed, *task.encode()]).permutation(len(keep))
        keep = sorted(keep[j] for j in order[: entry.instances])
    if not keep:
        raise ValueError(f"mix: task {task!r} has no training instance to draw from")
    return keep
