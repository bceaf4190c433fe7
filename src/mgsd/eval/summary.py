"""The one-screen summary `mgsd evaluate` prints: SR / EM / PR per puzzle, with intervals.

For someone who wants a number without the pipeline. Per input condition, one line per puzzle
and one for the macro average (the unweighted mean over puzzles): n, success (SR), exact match
(EM) and progress rate (PR) in percent with their percentile-bootstrap intervals
(`mgsd.eval.metrics`, stratified by puzzle for the macro line), the parse rate, and the success
under the other answer reading (the paper's lenient parser beside the strict one, or the
reverse). pandas only, never torch.
"""

from __future__ import annotations

import math

import pandas as pd

from mgsd.eval import metrics

CONDITION_WORDS = {
    "image": "image input (the task)",
    "text": "text input (the state as text)",
    "image_oracle_state": "image input, the true state forced as the start of the reply",
    "teacher": "text input with the reference plan (the teacher's prompt)",
}


def _pct(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _ci(r: pd.Series, col: str) -> str:
    return f"{_pct(r[col])} [{_pct(r[f'{col}_lo'])}, {_pct(r[f'{col}_hi'])}]"


def render(
    rows: list[dict], title: str, bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0
) -> str:
    """The summary of evaluation records (`mgsd.data.records.EVAL_COLUMNS` dicts) as text."""
    df = pd.DataFrame(rows)
    if df.empty:
        return f"{title}\nno records"
    df["illegal_kind"] = df["illegal_kind"].fillna("")
    parser = df["parser"].iloc[0]
    other = "strict" if parser == "paper" else "paper"
    beside = metrics.READINGS[other]
    lines = [
        title,
        f"answers read with the {parser} parser; percent with {100 * confidence:g}% bootstrap "
        f"intervals ({bootstrap} resamples);",
        "macro: the unweighted mean over puzzles",
    ]
    head = f"  {'puzzle':<13}{'n':>5}  {'SR':<21}{'EM':<21}{'PR':<21}{'parsed':>6}"
    head += f"  SR ({other} parser)"
    ci = {"bootstrap": bootstrap, "confidence": confidence, "seed": seed}
    for cond, recs in metrics.order(df, ["condition"]).groupby("condition", sort=False):
        per = metrics.summarize(recs, ["puzzle"], **ci)
        mac = metrics.macro(recs, [], **ci).assign(puzzle="macro")
        lines += ["", CONDITION_WORDS.get(cond, cond), head]
        for _, r in pd.concat([per, mac], ignore_index=True).iterrows():
            lines.append(
                f"  {r['puzzle']:<13}{int(r['n']):>5}  {_ci(r, 'success'):<21}"
                f"{_ci(r, 'exact_match'):<21}{_ci(r, 'progress_rate'):<21}"
                f"{_pct(r['parsed']):>6}  {_ci(r, beside)}"
            )
    return "\n".join(lines)
