"""From a data row to what a model sees and says, for every stage and evaluation condition.

| task | prompt | target reply |
| --- | --- | --- |
| `student` | picture + student prompt (the real task; sft_direct, distillation) | state, then plan |
| `symbolic` | state as text (symbolic pretraining, the `text` condition) | state, then plan |
| `teacher` | state as text + the reference plan (the distillation teacher) | state, then plan |
| `grounding` | picture + grounding prompt (MGSD stage 1) | the state text |
| `grounding_student` | picture + student prompt (stage 1, `grounding_prompt: student`) | the state, no end of turn |
| `oracle` | picture + student prompt, the true state forced as the reply's start | the plan |
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from mgsd import puzzles
from mgsd.data import records
from mgsd.model import prompts
from mgsd.model.batching import Example

STAGE_TASK = {"symbolic_pretrain": "symbolic", "grounding": "grounding", "sft_direct": "student"}


def stage_task(stage: str, grounding_prompt: str = "grounding") -> str:
    """The task a supervised stage trains (grounding may read the state under the student prompt)."""
    if stage == "grounding" and grounding_prompt == "student":
        return "grounding_student"
    return STAGE_TASK[stage]


CONDITION_TASK = {"image": "student", "text": "symbolic", "image_oracle_state": "oracle"}


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
    """The rows of several data files, in file order."""
    out = []
    for path in paths:
        for r in records.read_data(path):
            out.append(
                Instance(r["id"], r["puzzle"], r["level"], r["state"], r["image"], r["solution"])
            )
    return out


def validation_set(insts: list[Instance], n: int, seed: int) -> list[Instance]:
    """A fixed, seeded sample of `n` validation instances spread over puzzles and sides."""
    order = np.random.default_rng(seed).permutation(len(insts))
    return [insts[i] for i in order[: min(n, len(insts))]]


def make_example(
    task: str, inst: Instance, style: str, with_reply: bool = True, end: bool = True
) -> Example:
    """The model input (and, for training, the target reply) of `inst` under `task`.

    `end=False` (grounding only) makes the target the state text as the start of a reply,
    without the end of the turn: the model learns to read the state and is not taught to stop
    there, so it goes on with the plan it learnt as the base model.
    """
    p, s = inst.puzzle, inst.state
    full = prompts.reply_text(p, s, style)
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
    raise ValueError(
        f"unknown task {task!r} (student, symbolic, teacher, grounding, grounding_student, oracle)"
    )


def task_success(task: str, inst: Instance, reply: str) -> bool:
    """Greedy validation success: the right state for grounding, a solved puzzle otherwise."""
    p = puzzles.get(inst.puzzle)
    if task in ("grounding", "grounding_student"):
        stated = prompts.parse_stated_state(inst.puzzle, reply + "\n<answer></answer>")
        truth = p.field_values(inst.state)
        return all(stated.get(k) == v for k, v in truth.items())
    return p.score(inst.state, reply).success
