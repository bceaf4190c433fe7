"""The one-screen summary of `mgsd evaluate` on hand-made records: per puzzle and macro lines,
intervals, and the other answer reading beside SR."""

from __future__ import annotations

import pytest

from mgsd.eval import summary


def rec(puzzle: str, i: int, condition: str = "image", parser: str = "strict") -> dict:
    strict = i % 2 == 0  # instances 0, 2, ... succeed under the strict reading
    paper = strict or i == 1  # and instance 1 under the paper's too
    return {
        "id": f"{puzzle}-{i}", "puzzle": puzzle, "level": 3, "method": "m", "replicate": 0,
        "external": True, "condition": condition, "success": paper if parser == "paper" else strict,
        "exact_match": strict, "progress_rate": 1.0 if strict else 0.0, "parsed": i != 3,
        "illegal_kind": "", "parser": parser, "success_strict": strict, "success_paper": paper,
    }  # fmt: skip


def lines_of(text: str, start: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip().startswith(start)]


@pytest.mark.parametrize("parser", ["strict", "paper"])
def test_summary_lines_per_puzzle_and_macro(parser):
    rows = [rec("frozenlake", i, parser=parser) for i in range(4)]  # SR 50 / paper 75
    rows += [rec("maze", i, parser=parser) for i in range(2)]  # SR 50 / paper 100
    rows += [rec("maze", i, "text", parser) for i in range(2)]
    text = summary.render(rows, "TITLE", bootstrap=100)
    assert text.splitlines()[0] == "TITLE"
    assert f"answers read with the {parser} parser" in text and "95% bootstrap" in text
    other = "paper" if parser == "strict" else "strict"
    assert len(lines_of(text, "puzzle")) == 2  # one header per condition
    assert all(f"SR ({other} parser)" in x for x in lines_of(text, "puzzle"))
    assert text.index("image input (the task)") < text.index("text input (the state as text)")
    fl = lines_of(text, "frozenlake")[0].split()
    sr, beside = ("50.0", "75.0") if parser == "strict" else ("75.0", "50.0")
    assert fl[:3] == ["frozenlake", "4", sr] and fl[3].startswith("[")
    assert fl[-3] == beside and fl[-4] == "75.0"  # the other reading, and the parse rate
    macro = lines_of(text, "macro ")[0].split()  # the image lines come first
    assert macro[:3] == ["macro", "6", "50.0" if parser == "strict" else "87.5"]


def test_empty_records_say_so():
    assert summary.render([], "TITLE") == "TITLE\nno records"
