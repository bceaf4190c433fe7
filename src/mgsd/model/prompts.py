"""The wording of every prompt and target reply, in two styles.

`compact` prompts are short fixed headers for scratch backbones (they learn the format from the
data, so fewer prompt tokens is all that matters); `instruct` prompts explain the puzzle, its
actions, the coordinates, the state and answer formats and the reply format, for pretrained
instruct models. Three prompt kinds, all chat messages (the picture itself travels separately,
the messages only hold its placeholder ``{"type": "image"}``):

- `student_messages`: picture -> plan (the task);
- `symbolic_messages`: the state as text (and, for the distillation teacher, the reference
  plan) -> plan: the symbolic upper bound and the teacher's prompt;
- `grounding_messages`: picture -> state text (MGSD stage 1);
- `perception_messages`: picture + a generic question -> a short answer (stage 0 of scratch
  backbones: reading pictures in another wording than the task's).

Replies start with the recovered state (`describe(state)`), then at most
one line of reasoning, then ``<answer>...</answer>``; `mgsd.puzzles.base.parse_stated_state`
reads the state back from a model's reply and never raises. `tokenizer_corpus` is the deterministic text the scratch
tokenizer is trained on.
"""

from __future__ import annotations

from typing import Any

from mgsd import puzzles

STYLES = ("compact", "instruct")

# ---------------------------------------------------------------- instruct wording

_COORDS = (
    "Cells are written as 'row col', counting from 0: row 0 is the top row and column 0 the "
    "left column."
)
_REPLY_FORMAT = (
    "Reply format: first write the state in the state format, then at most one line of "
    "reasoning, then a shortest successful plan as <answer>...</answer>. Write nothing after "
    "the answer."
)


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"prompt style {style!r} is not one of {', '.join(STYLES)}")


def _module(puzzle_name: str) -> Any:
    return puzzles.get(puzzle_name)


def _state(puzzle_name: str, state: Any) -> Any:
    """Accept a puzzle State or its canonical dict."""
    return _module(puzzle_name).from_dict(state) if isinstance(state, dict) else state


def _user(text: str, image: bool) -> list[dict]:
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


# ---------------------------------------------------------------- prompts


def student_messages(puzzle_name: str, style: str) -> list[dict]:
    """Picture -> reply with state and plan (the task)."""
    _check_style(style)
    wording = _module(puzzle_name).WORDING
    if style == "compact":
        return _user(f"{puzzle_name}: picture. Reply: state, then plan.", image=True)
    text = "\n".join(
        [
            f"The picture shows one instance of this puzzle. {wording.rules}",
            wording.picture,
            _COORDS,
            wording.actions,
            wording.state_format,
            wording.answer_format,
            _REPLY_FORMAT,
        ]
    )
    return _user(text, image=True)


def symbolic_messages(
    puzzle_name: str, state: Any, style: str, plan: list[str] | None = None
) -> list[dict]:
    """The state as text -> reply; with `plan`, the reference plan too (distillation teacher)."""
    _check_style(style)
    module = _module(puzzle_name)
    description = module.describe(_state(puzzle_name, state))
    hint = None if plan is None else module.format_answer(list(plan))
    if style == "compact":
        lines = [f"{puzzle_name}: state", description]
        if hint is not None:  # in the reply's own tokens, so that the answer is a plain copy
            lines.append(f"reference plan:\n<answer>{hint}</answer>")
        lines.append("Reply: state, then plan.")
        return _user("\n".join(lines), image=False)
    lines = [
        f"Here is one instance of this puzzle, written as text. {module.WORDING.rules}",
        _COORDS,
        module.WORDING.actions,
        module.WORDING.state_format,
        "The state:",
        description,
    ]
    if hint is not None:
        lines.append(f"A reference shortest plan (use it): {hint}")
    lines += [module.WORDING.answer_format, _REPLY_FORMAT]
    return _user("\n".join(lines), image=False)


def grounding_messages(puzzle_name: str, style: str) -> list[dict]:
    """Picture -> the state text alone (MGSD stage 1)."""
    _check_style(style)
    wording = _module(puzzle_name).WORDING
    if style == "compact":
        return _user(f"{puzzle_name}: picture. Reply: state.", image=True)
    text = "\n".join(
        [
            f"The picture shows one instance of this puzzle. {wording.rules}",
            wording.picture,
            _COORDS,
            wording.state_format,
            "Reply with the state in the state format and nothing else.",
        ]
    )
    return _user(text, image=True)


def perception_messages(puzzle_name: str, question: str, style: str) -> list[dict]:
    """Picture + one generic question about it (stage 0 of scratch backbones): the wording and
    the answer format are not the task's, as in an instruct model's general picture Q/A."""
    _check_style(style)
    wording = _module(puzzle_name).WORDING
    if style == "compact":
        return _user(f"{puzzle_name}: picture. Question: {question}", image=True)
    text = (
        f"The picture shows one instance of this puzzle. {wording.rules}\n"
        f"{wording.picture}\n{question} Answer in a few words."
    )
    return _user(text, image=True)


# ---------------------------------------------------------------- replies


def reply_text(
    puzzle_name: str, state: Any, style: str = "compact", plan: list[str] | None = None
) -> str:
    """The target reply: state, (instruct: one line of reasoning), then the optimal answer.

    `plan` is the instance's stored plan (`mgsd.model.tasks.Instance.plan`, the data file's
    `solution`, itself `solve(state)` when the row was made); without one the state is solved.
    """
    _check_style(style)
    module = _module(puzzle_name)
    state = _state(puzzle_name, state)
    plan = module.solve(state) if plan is None else plan
    lines = [module.describe(state)]
    if style == "instruct":
        lines.append(f"A shortest plan has {len(plan)} actions.")
    lines.append(f"<answer>{module.format_answer(plan)}</answer>")
    return "\n".join(lines)


def state_prefix(puzzle_name: str, state: Any) -> str:
    """The true state, forced as the start of the reply (image_oracle_state condition).

    `reply_text` begins with it in every style, so ``reply_text[len(state_prefix):]`` is the
    rest of the target reply.
    """
    return _module(puzzle_name).describe(_state(puzzle_name, state)) + "\n"


def grounding_reply(puzzle_name: str, state: Any) -> str:
    """The target of grounding: the state text alone."""
    return _module(puzzle_name).describe(_state(puzzle_name, state))


# ---------------------------------------------------------------- tokenizer corpus

CORPUS_SIDES = range(3, 9)
CORPUS_SEEDS = range(4)


def _message_text(messages: list[dict]) -> str:
    parts = []
    for m in messages:
        parts.append(m["role"])
        parts += [c["text"] for c in m["content"] if c["type"] == "text"]
    return "\n".join(parts)


def tokenizer_corpus() -> list[str]:
    """Deterministic text covering every prompt and reply of both styles, sides 3-8.

    Instance-specific texts (state prompts, replies) are repeated per instance; the fixed
    instruct prompts appear once per puzzle, so that the BPE merges favour the state and
    answer text that scratch models read and write most.
    """
    corpus = ["system\nuser\nassistant"]
    for name in puzzles.NAMES:
        module = _module(name)
        lo, hi = module.LEVELS
        for style in STYLES:
            corpus.append(_message_text(student_messages(name, style)))
            corpus.append(_message_text(grounding_messages(name, style)))
        for level in CORPUS_SIDES:
            if not lo <= level <= hi:
                continue
            for seed in CORPUS_SEEDS:
                state = module.generate(level, seed)
                plan = module.solve(state)
                corpus.append(_message_text(symbolic_messages(name, state, "compact")))
                corpus.append(_message_text(symbolic_messages(name, state, "compact", plan)))
                corpus.append(reply_text(name, state, "compact"))
                corpus.append(reply_text(name, state, "instruct"))
                for question, answer in module.questions(state)[:6]:
                    corpus.append(_message_text(perception_messages(name, question, "compact")))
                    corpus.append(answer)
        state = module.generate(max(4, lo), 0)
        corpus.append(
            _message_text(symbolic_messages(name, state, "instruct", module.solve(state)))
        )
    return corpus
