"""Aggregate evaluation records into the paper's numbers (pandas / numpy only, never torch).

Input: evaluation records (docs/architecture.md, "Evaluation records"), one row per test instance,
read with `load_records`. Every rate here is a fraction in [0, 1]; the report turns it into percent.

- `summarize(df, by)`: per group n, the means of success / exact_match / progress_rate / parsed,
  of the success under each answer reading (`success_strict`, `success_paper`; `success` is the
  one of the records' `parser`) and the illegal-action rate of every kind; with
  ``bootstrap > 0`` also percentile-bootstrap CIs.
- `macro(df, by)`: the same numbers as the unweighted mean over puzzles of the per-puzzle means.
  Its CI treats puzzles as fixed strata: every bootstrap replicate resamples each puzzle's
  instances independently (with replacement, keeping that puzzle's size), takes each puzzle's mean
  and averages them; the interval is the percentile interval of those replicate macro means.
- `paired_difference(a, b, columns)`: per-instance differences on the instances both frames hold
  (same puzzle and id), e.g. a method minus mgsd, or image_oracle_state minus image. Averaging and
  bootstrapping those differences gives paired CIs for deltas and gaps.
- `perception(df, by)`: per-field state recovery accuracy and the all-correct rate.
- `error_decomposition(df, by)`: of the failures, the perception errors (the recovered state is
  wrong) and the planning errors (the state is right, the plan is not). A failure whose state
  could not be read at all (`state_parsed` false) counts as a perception error: the model did not
  show that it recovered the state, and the image is the only place the state could come from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mgsd import puzzles
from mgsd.config import CONDITIONS, METHODS, PUZZLES
from mgsd.data.records import EVAL_COLUMNS, EVAL_SCHEMA, RecordError, read_table

METRICS = ("success", "exact_match", "progress_rate")
READINGS = {"strict": "success_strict", "paper": "success_paper"}  # success per answer parser
RATES = (*METRICS, "parsed", *READINGS.values())
# every kind of illegal action, as the puzzles declare them (registry order, each once)
ILLEGAL_KINDS = tuple(dict.fromkeys(k for n in puzzles.NAMES for k in puzzles.get(n).ILLEGAL))
_BOOL_COLUMNS = (
    "success", "exact_match", "parsed", "state_parsed", "state_correct", *READINGS.values(),
    "external",
)  # fmt: skip
_ORDERS = {"method": METHODS, "puzzle": PUZZLES, "condition": CONDITIONS}


# ---------------------------------------------------------------- loading


def load_records(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Read and concatenate evaluation record files, checking columns, nulls and duplicates.

    Raises `RecordError` (a ValueError) naming the file and the column or instance at fault: a
    missing column, an empty file, a null in a column the metrics read, an unknown condition, or
    the same (method, condition, puzzle, id) in two rows.
    """
    frames = []
    for path in map(Path, paths):
        table = read_table(path, EVAL_SCHEMA)  # names the file and any missing column
        if table.num_rows == 0:
            raise RecordError(f"{path}: no evaluation records (empty file)")
        for col in (
            *_BOOL_COLUMNS,
            "progress_rate",
            "level",
            "id",
            "puzzle",
            "method",
            "replicate",
            "parser",
        ):
            if table.column(col).null_count:
                raise RecordError(
                    f"{path}: column {col!r} has {table.column(col).null_count} nulls"
                )
        df = table.select(list(EVAL_COLUMNS)).to_pandas()
        bad = sorted(set(df["condition"]) - set(CONDITIONS))
        if bad:
            raise RecordError(
                f"{path}: unknown condition {bad[0]!r} (known: {', '.join(CONDITIONS)})"
            )
        if bad := sorted(set(df["parser"]) - set(READINGS)):
            raise RecordError(f"{path}: unknown parser {bad[0]!r} (known: {', '.join(READINGS)})")
        df["_file"] = str(path)
        frames.append(df)
    if not frames:
        raise RecordError("no evaluation record files given")
    df = pd.concat(frames, ignore_index=True)
    key = ["method", "replicate", "condition", "puzzle", "id"]
    dup = df[df.duplicated(key, keep=False)]
    if len(dup):
        first = dup.iloc[0]
        files = sorted(set(dup.loc[(dup[key] == first[key]).all(axis=1), "_file"]))
        raise RecordError(
            f"instance {first['id']!r} ({first['method']}, {first['condition']}) appears more "
            f"than once, in: {', '.join(files)}"
        )
    for col in _BOOL_COLUMNS:
        df[col] = df[col].astype(bool)
    df["level"] = df["level"].astype(int)
    df["replicate"] = df["replicate"].astype(int)
    df["progress_rate"] = df["progress_rate"].astype(float)
    df["illegal_kind"] = df["illegal_kind"].fillna("").astype(str)
    df["state_fields"] = df["state_fields"].fillna("{}").astype(str)
    return df.drop(columns="_file")


def order(df: pd.DataFrame, keys: Sequence[str] = ("method", "puzzle", "level", "condition")):
    """Sort rows by `keys` (those present) in the fixed report order of methods, puzzles and
    conditions (`mgsd.config`; unknown values after the known ones), levels ascending."""
    keys = [c for c in keys if c in df.columns]
    if not keys or df.empty:
        return df.reset_index(drop=True)
    return df.sort_values(keys, key=lambda s: _rank(s), kind="stable").reset_index(drop=True)


def _rank(s: pd.Series) -> pd.Series:
    known = _ORDERS.get(str(s.name))
    if known is None:
        return s
    extra = sorted(set(s) - set(known), key=str)
    rank = {v: i for i, v in enumerate((*known, *extra))}
    return s.map(rank)


def external_methods(df: pd.DataFrame) -> set[str]:
    """The methods whose records come from external models (config `external_models`)."""
    return set(df.loc[df["external"], "method"]) if len(df) else set()


def parsers(df: pd.DataFrame) -> list[str]:
    """The answer readings behind the records' success column, in `READINGS` order."""
    have = set(df["parser"]) if len(df) else set()
    return [p for p in READINGS if p in have]


def image_records(df: pd.DataFrame) -> pd.DataFrame:
    """The records of the task itself: image input (a method named `symbolic` left out)."""
    return df[(df["condition"] == "image") & (df["method"] != "symbolic")]


def main_records(df: pd.DataFrame) -> pd.DataFrame:
    """`image_records` plus the symbolic upper bound: `base` under the text condition, relabelled
    `symbolic` (records of a method named `symbolic` under text stand in when base has none)."""
    text = df[(df["method"] == "base") & (df["condition"] == "text")]
    if text.empty:
        text = df[(df["method"] == "symbolic") & (df["condition"] == "text")]
    return pd.concat([image_records(df), text.assign(method="symbolic")], ignore_index=True)


def _groups(df: pd.DataFrame, by: Sequence[str]) -> list[tuple[dict, pd.DataFrame]]:
    by = list(by)
    if not by:
        return [({}, df)] if len(df) else []
    return [
        (dict(zip(by, k if isinstance(k, tuple) else (k,), strict=True)), g)
        for k, g in df.groupby(by, sort=False)
    ]


# ---------------------------------------------------------------- bootstrap


def _bootstrap_means(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` means of resamples (with replacement, same size) of `values`; shape (n,)."""
    means = np.empty(n)
    chunk = max(1, 2**22 // len(values))  # bound the (chunk, N) index array to ~32 MB
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        idx_KN = rng.integers(0, len(values), size=(k, len(values)))
        means[start : start + k] = values[idx_KN].mean(axis=1)
    return means


def _interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _check_bootstrap(n: int, confidence: float) -> None:
    if n < 1:
        raise ValueError(f"bootstrap: need at least one resample, got {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: {confidence} must lie strictly between 0 and 1")


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of `values` (deterministic in `seed`).

    Empty input gives (nan, nan).
    """
    _check_bootstrap(n, confidence)
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return _interval(_bootstrap_means(v, n, np.random.default_rng(seed)), confidence)


def macro_ci(
    groups: Sequence[Sequence[float] | np.ndarray],
    n: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the unweighted mean of the group means.

    Each group (puzzle) is resampled independently within itself; one generator seeded with
    `seed` draws the groups in the order given, so that groups of equal size do not get the same
    resampling indices. Empty groups are left out; none left gives (nan, nan).
    """
    _check_bootstrap(n, confidence)
    arrays = [np.asarray(g, dtype=float) for g in groups]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    reps_GN = np.stack([_bootstrap_means(a, n, rng) for a in arrays])
    return _interval(reps_GN.mean(axis=0), confidence)


# ---------------------------------------------------------------- means and CIs


def mean_table(
    df: pd.DataFrame,
    columns: Sequence[str],
    by: Sequence[str],
    *,
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    ci_columns: Sequence[str] | None = None,
    over_puzzles: bool = False,
) -> pd.DataFrame:
    """Per group of `by`: n and the mean of each of `columns` (`<col>_lo`, `<col>_hi` too for
    `ci_columns`, default all, when ``bootstrap > 0``).

    With ``over_puzzles`` each mean is the unweighted mean over the group's puzzles (macro), its
    CI the stratified bootstrap of `macro_ci`, and `n_puzzles` counts the puzzles averaged.
    """
    ci_columns = list(columns if ci_columns is None else ci_columns) if bootstrap else []
    out_cols = [*by, "n", *(["n_puzzles"] if over_puzzles else [])]
    for c in columns:
        out_cols += [c, f"{c}_lo", f"{c}_hi"] if c in ci_columns else [c]
    rows = []
    for keys, g in _groups(df, by):
        row = {**keys, "n": len(g)}
        parts = [p for _, p in order(g).groupby("puzzle", sort=False)] if over_puzzles else [g]
        if over_puzzles:
            row["n_puzzles"] = len(parts)
        for c in columns:
            arrays = [p[c].to_numpy(dtype=float) for p in parts]
            row[c] = float(np.mean([a.mean() for a in arrays]))
            if c in ci_columns:
                row[f"{c}_lo"], row[f"{c}_hi"] = macro_ci(arrays, bootstrap, confidence, seed)
        rows.append(row)
    return order(pd.DataFrame(rows, columns=out_cols))


def _with_illegal_flags(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    kinds = [*ILLEGAL_KINDS, *sorted(set(df["illegal_kind"]) - set(ILLEGAL_KINDS) - {""})]
    flags = {f"illegal_{k}": (df["illegal_kind"] == k).astype(float) for k in kinds}
    return df.assign(**flags), list(flags)


def summarize(
    df: pd.DataFrame,
    by: Sequence[str],
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    over_puzzles: bool = False,
) -> pd.DataFrame:
    """Per group: n, mean success / exact_match / progress_rate / parsed / success_strict /
    success_paper (`RATES`), `illegal_<kind>` rates; with ``bootstrap > 0`` the
    percentile-bootstrap CIs of the `RATES` means (`<col>_lo/_hi`); `over_puzzles`: the
    unweighted mean over puzzles (see `macro`)."""
    flagged, illegal = _with_illegal_flags(df)
    return mean_table(
        flagged,
        [*RATES, *illegal],
        by,
        bootstrap=bootstrap,
        confidence=confidence,
        seed=seed,
        ci_columns=RATES,
        over_puzzles=over_puzzles,
    )


def macro(
    df: pd.DataFrame,
    by: Sequence[str] = ("method",),
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """`summarize` averaged over puzzles without weights (see the module docstring for the CI)."""
    return summarize(df, by, bootstrap, confidence, seed, over_puzzles=True)


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`a - b` of each of `columns`, per instance (puzzle, id) present in both frames."""
    keys = ["puzzle", "id"]
    both = a[[*keys, *columns]].merge(b[[*keys, *columns]], on=keys, suffixes=("_a", "_b"))
    diff = {c: both[f"{c}_a"].astype(float) - both[f"{c}_b"].astype(float) for c in columns}
    return pd.DataFrame({"puzzle": both["puzzle"], "id": both["id"], **diff})


# ---------------------------------------------------------------- perception and errors


def _fields(df: pd.DataFrame) -> list[dict]:
    out = []
    for rid, text in zip(df["id"], df["state_fields"], strict=True):
        try:
            d = json.loads(text) if text else {}
        except json.JSONDecodeError as e:
            raise RecordError(f"instance {rid!r}: state_fields is not JSON ({e})") from e
        if not isinstance(d, dict):
            raise RecordError(f"instance {rid!r}: state_fields must be a JSON object, got {text!r}")
        out.append(d)
    return out


def perception(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group: n, `state_parsed` and `state_correct` rates, and `field/<name>` accuracies.

    A field's accuracy is the share of the group's instances whose stated value of that field is
    right; an instance that does not report the field (e.g. its state was unreadable) counts as
    wrong, so field accuracies are comparable with the all-correct rate. Fields are the union of
    the group's field names, in first-seen order; a field of another group is NaN here.
    """
    rows, field_names = [], []
    for keys, g in _groups(df, by):
        fields = _fields(g)
        names = list(dict.fromkeys(k for d in fields for k in d))
        field_names += [f for f in names if f not in field_names]
        row = {**keys, "n": len(g)}
        row["state_parsed"] = float(g["state_parsed"].mean())
        row["state_correct"] = float(g["state_correct"].mean())
        for f in names:
            row[f"field/{f}"] = float(np.mean([d.get(f) is True for d in fields]))
        rows.append(row)
    cols = [*by, "n", "state_parsed", "state_correct", *(f"field/{f}" for f in field_names)]
    return order(pd.DataFrame(rows, columns=cols))


def error_decomposition(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group: n, failures, perception_errors (failure with a wrong or unreadable state) and
    planning_errors (failure with a correct state) as counts, as shares of the failures
    (`*_share`, NaN without failures) and as shares of all instances (`*_rate`)."""
    rows = []
    for keys, g in _groups(df, by):
        failed = ~g["success"]
        right_state = g["state_parsed"] & g["state_correct"]
        n_fail = int(failed.sum())
        perc, plan = int((failed & ~right_state).sum()), int((failed & right_state).sum())
        row = {**keys, "n": len(g), "failures": n_fail}
        for kind, k in (("perception", perc), ("planning", plan)):
            row[f"{kind}_errors"] = k
            row[f"{kind}_share"] = k / n_fail if n_fail else float("nan")
            row[f"{kind}_rate"] = k / len(g)
        rows.append(row)
    cols = [*by, "n", "failures"]
    cols += [
        f"{kind}_{s}" for s in ("errors", "share", "rate") for kind in ("perception", "planning")
    ]
    return order(pd.DataFrame(rows, columns=cols))
