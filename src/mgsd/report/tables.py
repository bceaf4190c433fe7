"""`mgsd tables`: the paper's tables from evaluation records (pandas only, never torch).

    mgsd tables --records results/R/eval/*/*/*.parquet --config '{"bootstrap": 1000}' \\
        --out results/R/tables

Writes <out>/<name>.csv, .md and .tex for every name in `TABLES` (`table_files()` lists them),
plus tables_config.json (the section used):

- main: methods x puzzles, SR / EM / PR and their macro average over puzzles, image input; the
  `symbolic` row is `base` given the text state (the symbolic upper bound). Beside SR, `SR (paper
  parser)`: the success of the same replies under the MGSD paper's lenient answer reading (or,
  when the evaluation already used that reading, `SR (strict parser)`), so that numbers compare
  with published ones and the inflation shows.
- per_level: the same per puzzle and side N.
- ablations: mgsd, its ablations, opd_only, the RL baselines (grpo, grpo_only), grounding and
  the supervised comparisons (grounding_sft, sft_direct), with paired deltas to mgsd.
- modality_gap: per method SR under image, image_oracle_state and text; perception gap =
  oracle - image, remaining gap = text - oracle.
- perception: per method and puzzle, state recovery accuracy per field and all-correct (image).
- errors: failures split into perception and planning errors (`mgsd.eval.metrics`), image input.
- premise: the base model on the validation split (`--premise` records), before any method: SR
  given the state as text and given the teacher's prompt (state + reference plan), SR and parse
  rate from the picture, its perception, and SR with the true state forced (image_oracle_state);
  checked against the shape of the paper's premise (`PREMISE_TARGETS`).
- seeds: methods trained with several seeds (config `replicates`): macro SR / EM / PR of each
  seed, their mean and a t-interval across seeds. Every other table uses each method's first
  seed (replicate 0).
- training: from the training logs (`--train-logs`), each distillation run's health: the reverse
  KL, the student's log-prob of its own samples, the mass the raw student puts on ids it can
  never sample and the samples' parse rate, first and last steps, against the criteria in
  `HEALTH`; and each supervised stage's final validation scores.

External models (config `external_models`) are rows like any method in every table whose
rows are methods, marked "<name> (external)" (and `external` in the csv); the ablations table
lists them last, with their paired differences to mgsd.

CSV files are tidy: one row per (method, puzzle[, side]), rates in percent, each CI bound in its
own column (`sr`, `sr_lo`, `sr_hi`, ...). The md and tex files show each value as
"mean [low, high]", the percentile-bootstrap interval at the configured confidence. Deltas and
gaps are paired: per-instance differences on the test instances both sides share, bootstrapped
like any mean. A table with no rows is still written (header only) with a note saying what is
missing. Rows follow the fixed method order of `mgsd.config.METHODS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mgsd.config import TablesConfig, load_section, section_json
from mgsd.eval import metrics
from mgsd.eval.metrics import METRICS
from mgsd.io import atomic_write_text
from mgsd.report.logs import load_train_logs
from mgsd.report.style import (
    EXTERNAL_NOTE,
    NA,
    Table,
    method_label,
    pct,
    pct_ci,
    write_table,
)

TABLES = (
    "main", "per_level", "ablations", "modality_gap", "perception", "errors", "premise", "seeds",
    "training",
)  # fmt: skip
FORMATS = ("csv", "md", "tex")
ABLATIONS = (
    "mgsd", "mgsd_no_plan", "mgsd_full_kl", "mgsd_teacher_grounded", "opd_only", "grpo",
    "grpo_only", "grounding", "grounding_sft", "sft_direct",
)  # fmt: skip
GAPS = {
    "perception_gap": ("image_oracle_state", "image"),
    "remaining_gap": ("text", "image_oracle_state"),
}
CONDITIONS = ("image", "image_oracle_state", "text")  # modality_gap column order
MACRO = "macro"
SHORT = {
    "success": "sr", "exact_match": "em", "progress_rate": "pr", "parsed": "parse",
    "success_strict": "sr_strict", "success_paper": "sr_paper",
}  # fmt: skip
PARSER_WORDS = {
    "strict": "the strict parser (the last closed <answer> block, every token an action)",
    "paper": "the paper's lenient parser (the first <answer> block, or every action word of the "
    "reply when no block is closed; other words skipped)",
}
LABEL = {"success": "SR", "exact_match": "EM", "progress_rate": "PR"}
NO_IMAGE = "no image records: no method was evaluated under the image condition"
# the paper's premise (a pretrained instruct VLM): plans well from text, poorly from pictures,
# reads some of the picture; (condition, metric, low, high) on the macro row, in percent
PREMISE_TARGETS = (
    ("text", "success", 70, 100),
    ("image", "success", 5, 25),
    ("image", "parsed", 80, 100),
    ("teacher", "success", 90, 100),
)
PREMISE_COLUMNS = (  # (condition, metric, header)
    ("text", "success", "SR text"),
    ("teacher", "success", "SR teacher"),
    ("image", "success", "SR image"),
    ("image", "parsed", "parse image"),
    ("image_oracle_state", "success", "SR image + oracle state"),
)


CONFIG_FILE = "tables_config.json"  # the section the tables were made with


def table_files() -> list[str]:
    """The file names `main` writes into --out besides `CONFIG_FILE` (the Snakefile declares
    both)."""
    return [f"{name}.{fmt}" for name in TABLES for fmt in FORMATS]


# ---------------------------------------------------------------- helpers


def _ci(cfg: TablesConfig) -> dict:
    return {"bootstrap": cfg.bootstrap, "confidence": cfg.confidence, "seed": cfg.seed}


def _caption(cfg: TablesConfig, what: str) -> str:
    return (
        f"{what} Values in percent; brackets: {100 * cfg.confidence:g}% percentile-bootstrap "
        f"interval ({cfg.bootstrap} resamples); macro = unweighted mean over puzzles."
    )


def _per_and_macro(
    df: pd.DataFrame, by: list[str], cfg: TablesConfig, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per (by, puzzle) rows and (by, puzzle="macro") rows: `summarize` / `macro` of records,
    or, given `columns`, the plain means (with CIs) of those columns, e.g. paired differences."""
    if columns is None:
        per = metrics.summarize(df, [*by, "puzzle"], **_ci(cfg))
        mac = metrics.macro(df, by, **_ci(cfg))
    else:
        per = metrics.mean_table(df, columns, [*by, "puzzle"], **_ci(cfg))
        mac = metrics.mean_table(df, columns, by, over_puzzles=True, **_ci(cfg))
    return pd.concat([per, mac.assign(puzzle=MACRO)], ignore_index=True) if len(mac) else per


def _tidy(stats: pd.DataFrame, keys: Sequence[str], cols: Sequence[str]) -> pd.DataFrame:
    """The csv: keys, n, and each rate column (and its CI bounds) in percent, short names."""
    out = stats[[*keys, "n"]].copy()
    for c in cols:
        short = "d_" + SHORT[c[2:]] if c.startswith("d_") else SHORT.get(c, c)
        for suffix in ("", "_lo", "_hi"):
            if f"{c}{suffix}" in stats:
                out[f"{short}{suffix}"] = 100 * stats[f"{c}{suffix}"].astype(float)
    return out


def _lookup(stats: pd.DataFrame, keys: Sequence[str]) -> dict[tuple, pd.Series]:
    return {tuple(r[k] for k in keys): r for _, r in stats.iterrows()}


def _cell(row: pd.Series | None, col: str, signed: bool = False) -> str:
    if row is None or col not in row:
        return NA
    return pct_ci(row[col], row.get(f"{col}_lo"), row.get(f"{col}_hi"), signed=signed)


def _unique(df: pd.DataFrame, col: str) -> list:
    return list(dict.fromkeys(metrics.order(df, [col])[col])) if len(df) else []


def _short_macros(stats: pd.DataFrame, key: str) -> list[str]:
    """Notes for groups whose macro average covers fewer puzzles than others."""
    mac = stats[stats["puzzle"] == MACRO]
    if mac.empty:
        return []
    full = int(mac["n_puzzles"].max())
    return [
        f"macro of {r[key]} averages only {int(r['n_puzzles'])} of {full} puzzles"
        for _, r in mac[mac["n_puzzles"] < full].iterrows()
    ]


# ---------------------------------------------------------------- the tables


def _other_reading(recs: pd.DataFrame) -> tuple[str, list[str], list[str]]:
    """(the answer reading shown beside SR, caption sentences, notes): the paper's, unless the
    records' SR already is the paper's; then the strict one."""
    used = metrics.parsers(recs)
    other = "strict" if used == ["paper"] else "paper"
    words = [f"SR ({other} parser): the same replies read with {PARSER_WORDS[other]}."]
    if len(used) == 1:
        words.insert(0, f"SR / EM / PR read each reply with {PARSER_WORDS[used[0]]}.")
    notes = [f"the records mix answer parsers ({', '.join(used)})"] if len(used) > 1 else []
    return other, words, notes


def main_table(df: pd.DataFrame, cfg: TablesConfig) -> Table:
    recs = metrics.main_records(df)
    stats = _per_and_macro(recs, ["method"], cfg)
    puzzles = _unique(recs, "puzzle") + ([MACRO] if len(recs) else [])
    at = _lookup(stats, ["method", "puzzle"])
    other, words, notes = _other_reading(recs)
    shown = ("success", metrics.READINGS[other], "exact_match", "progress_rate")
    labels = {**LABEL, metrics.READINGS[other]: f"SR ({other} parser)"}
    rows = [
        [m] + [_cell(at.get((m, p)), c) for p in puzzles for c in shown]
        for m in _unique(stats, "method")
    ]
    if not len(metrics.image_records(df)):
        notes.append(NO_IMAGE)
    if len(recs) and "symbolic" not in set(recs["method"]):
        notes.append("no symbolic row: base was not evaluated under the text condition")
    return Table(
        "Main results",
        _caption(
            cfg,
            "Success (SR), exact match (EM), progress rate (PR); image input, "
            "symbolic = base given the text state. " + " ".join(words),
        ),
        _tidy(stats, ["method", "puzzle"], (*METRICS, "parsed", *metrics.READINGS.values())),
        [("", "method")] + [(p, labels[c]) for p in puzzles for c in shown],
        rows,
        notes + _short_macros(stats, "method"),
    )


def per_level_table(df: pd.DataFrame, cfg: TablesConfig) -> Table:
    keys = ["puzzle", "level", "method"]
    stats = metrics.order(metrics.summarize(metrics.main_records(df), keys, **_ci(cfg)), keys)
    rows = [
        [r["puzzle"], str(r["level"]), r["method"], str(r["n"])] + [_cell(r, c) for c in METRICS]
        for _, r in stats.iterrows()
    ]
    return Table(
        "Results per side",
        _caption(
            cfg,
            "SR / EM / PR per puzzle and grid side N; image input, symbolic = base "
            "given the text state.",
        ),
        _tidy(stats, keys, (*METRICS, "parsed")),
        [("", "puzzle"), ("", "N"), ("", "method"), ("", "n")] + [("", LABEL[c]) for c in METRICS],
        rows,
        [] if len(metrics.image_records(df)) else [NO_IMAGE],
        keys=4,
    )


def ablations_table(df: pd.DataFrame, cfg: TablesConfig) -> Table:
    image = metrics.image_records(df)
    externals = [m for m in _unique(image, "method") if m in metrics.external_methods(image)]
    compared = [*ABLATIONS, *externals]  # external models last, compared with mgsd alike
    recs = image[image["method"].isin(compared)]
    present = [m for m in compared if m in set(recs["method"])]
    stats = _per_and_macro(recs, ["method"], cfg)
    notes = []
    if missing := [m for m in ABLATIONS if m not in present]:
        notes.append(f"missing (no image records): {', '.join(missing)}")
    if present and "mgsd" not in present:
        notes.append("no mgsd records: no deltas to mgsd")
    deltas = []
    ref = recs[recs["method"] == "mgsd"]
    for m in present[1:] if "mgsd" in present else []:
        mine = recs[recs["method"] == m]
        diff = metrics.paired_difference(mine, ref, METRICS)
        if len(diff) < max(len(mine), len(ref)):
            notes.append(f"{m}: deltas use the {len(diff)} instances it shares with mgsd")
        if len(diff):
            deltas.append(_per_and_macro(diff, [], cfg, METRICS).assign(method=m))
    if deltas:
        delta = pd.concat(deltas, ignore_index=True).drop(columns=["n", "n_puzzles"])
        delta = delta.rename(columns=lambda k: k if k in ("method", "puzzle") else f"d_{k}")
        stats = stats.merge(delta, on=["method", "puzzle"], how="left")
    # mgsd first: it is the reference of the deltas
    stats = stats.sort_values("method", key=lambda s: s.map(compared.index), kind="stable")
    puzzles = _unique(recs, "puzzle")
    at = _lookup(stats, ["method", "puzzle"])
    rows = [
        [m]
        + [_cell(at.get((m, p)), "success") for p in puzzles]
        + [_cell(at.get((m, MACRO)), c) for c in METRICS]
        + [_cell(at.get((m, MACRO)), f"d_{c}", signed=True) for c in METRICS]
        for m in present
    ]
    return Table(
        "Ablations",
        _caption(
            cfg,
            "SR per puzzle, macro SR / EM / PR and the paired difference to mgsd "
            "(on the same test instances); image input; external models last.",
        ),
        _tidy(stats, ["method", "puzzle"], (*METRICS, "parsed", *(f"d_{c}" for c in METRICS))),
        [("", "method")]
        + [(p, "SR") for p in puzzles]
        + [(MACRO, LABEL[c]) for c in METRICS]
        + [("Δ to mgsd (macro)", LABEL[c]) for c in METRICS],
        rows,
        notes + _short_macros(stats, "method"),
    )


def _by_condition(df: pd.DataFrame, cfg: TablesConfig) -> pd.DataFrame:
    """One row per (method, puzzle or macro): n and SR with its CI under each condition."""
    stats = _per_and_macro(df, ["method", "condition"], cfg)
    if stats.empty:
        return pd.DataFrame(columns=["method", "puzzle"])
    values = ["n", "success", "success_lo", "success_hi"]
    wide = stats.pivot(index=["method", "puzzle"], columns="condition", values=values)
    wide.columns = [  # success_lo under image -> success_image_lo, as `_cell` reads it
        f"n_{c}" if v == "n" else v.replace("success", f"success_{c}") for v, c in wide.columns
    ]
    return wide.reset_index()


def _gaps(df: pd.DataFrame, cfg: TablesConfig, gap: str) -> pd.DataFrame:
    """One row per (method, puzzle or macro): the paired SR difference `gap` and its CI."""
    hi, lo = GAPS[gap]
    frames = [pd.DataFrame(columns=["method", "puzzle"])]
    for m in _unique(df, "method"):
        mine = df[df["method"] == m]
        diff = metrics.paired_difference(
            mine[mine["condition"] == hi], mine[mine["condition"] == lo], ["success"]
        )
        if len(diff):
            frames.append(_per_and_macro(diff, [], cfg, ["success"]).assign(method=m))
    cols = ["method", "puzzle", "success", "success_lo", "success_hi"]
    out = pd.concat(frames, ignore_index=True).reindex(columns=cols)
    return out.rename(columns=lambda k: k.replace("success", gap))


def modality_gap_table(df: pd.DataFrame, cfg: TablesConfig) -> Table:
    cols = ["method", "puzzle"]
    for cond in CONDITIONS:
        cols += [f"n_{cond}", f"success_{cond}", f"success_{cond}_lo", f"success_{cond}_hi"]
    for gap in GAPS:
        cols += [gap, f"{gap}_lo", f"{gap}_hi"]
    wide = _by_condition(df, cfg)
    for gap in GAPS:
        wide = wide.merge(_gaps(df, cfg, gap), on=["method", "puzzle"], how="left")
    notes = []
    for m in _unique(df, "method"):
        have = set(df.loc[df["method"] == m, "condition"])
        if missing := [c for c in CONDITIONS if c not in have]:
            notes.append(f"{m}: no {', '.join(missing)} records")
    stats = metrics.order(wide.reindex(columns=cols), ["method", "puzzle"])
    data = stats.copy()
    counts = [f"n_{c}" for c in CONDITIONS]
    rates = [c for c in cols[2:] if c not in counts]
    data[rates] = 100 * data[rates].astype(float)
    data[counts] = data[counts].astype("Int64")  # NaN-able: a method may lack a condition
    data = data.rename(columns=lambda k: k.replace("success_", "sr_"))
    rows = [
        [r["method"], r["puzzle"]]
        + [_cell(r, f"success_{c}") for c in CONDITIONS]
        + [_cell(r, gap, signed=True) for gap in GAPS]
        for _, r in stats.iterrows()
    ]
    return Table(
        "Modality gap",
        _caption(
            cfg,
            "SR under image, image + oracle state and text input; perception gap = "
            "oracle - image, remaining gap = text - oracle (paired on the same instances).",
        ),
        data,
        [
            ("", "method"),
            ("", "puzzle"),
            ("SR", "image"),
            ("SR", "image + oracle state"),
            ("SR", "text"),
            ("gap", "perception"),
            ("gap", "remaining"),
        ],
        rows,
        notes or ([] if len(stats) else ["no records"]),
        keys=2,
    )


def perception_table(df: pd.DataFrame, cfg: TablesConfig) -> Table:
    stats = metrics.perception(metrics.image_records(df), ["method", "puzzle"])
    fields = [c for c in stats.columns if c.startswith("field/")]
    rates = ["state_parsed", *fields, "state_correct"]
    data = stats.copy()
    data[rates] = 100 * data[rates].astype(float)
    rows = [
        [r["method"], r["puzzle"], str(r["n"])] + [pct(r[c]) for c in rates]
        for _, r in stats.iterrows()
    ]
    return Table(
        "Perception",
        "Share of test instances (percent, image input) whose stated state was readable, whose "
        "stated value of each field is right (unstated = wrong), and whose whole state is right.",
        data,
        [("", "method"), ("", "puzzle"), ("", "n"), ("", "state read")]
        + [("field", f.removeprefix("field/")) for f in fields]
        + [("", "all correct")],
        rows,
        [] if len(stats) else [NO_IMAGE],
        keys=3,
    )


def errors_table(df: pd.DataFrame, cfg: TablesConfig) -> Table:
    stats = metrics.error_decomposition(metrics.image_records(df), ["method", "puzzle"])
    data = stats.copy()
    shares = [c for c in stats.columns if c.endswith(("_share", "_rate"))]
    data[shares] = 100 * data[shares].astype(float)
    rows = [
        [r["method"], r["puzzle"], str(r["n"]), f"{r['failures']} ({pct(r['failures'] / r['n'])})"]
        + [f"{r[f'{k}_errors']} ({pct(r[f'{k}_share'])})" for k in ("perception", "planning")]
        for _, r in stats.iterrows()
    ]
    return Table(
        "Error decomposition",
        "Failures (count and percent of the instances) split into perception errors (the stated "
        "state is wrong or unreadable) and planning errors (right state, failed plan), each with "
        "its percent of the failures; image input.",
        data,
        [
            ("", "method"),
            ("", "puzzle"),
            ("", "n"),
            ("", "failures"),
            ("errors", "perception"),
            ("errors", "planning"),
        ],
        rows,
        [] if len(stats) else [NO_IMAGE],
        keys=3,
    )


# a distillation run is healthy when, at every logged step, the raw student puts less than this
# on ids it can never sample and its samples' log-prob stays above this, and its samples parse
# at the end at least as often as at the start (means of the first and last `EDGE` steps)
HEALTH = {"dead_mass": 1e-3, "student_logprob": -2.0}
EDGE = 5
# an on-policy run's kind, by the key that marks its log, and what its training signal is called
ON_POLICY = {"distillation": "distill/reverse_kl", "RL": "rl/reward"}
SIGNAL = {"distillation": "kl", "RL": "reward"}


def training_table(logs: dict[str, pd.DataFrame], cfg: TablesConfig) -> Table:
    """Distillation health and supervised validation scores, one row per training log."""
    rows, tidy, notes = [], [], []

    def col(log, key):
        return pd.to_numeric(log[key], errors="coerce").dropna() if key in log else pd.Series()

    for name, log in logs.items():
        skipped = col(log, "train/skipped_steps")
        if len(skipped) and skipped.max() > 0:
            notes.append(f"{name}: {int(skipped.max())} updates skipped (gradient not finite)")
        final = {k: col(log, k) for k in log.columns if str(k).startswith("val/")}
        val = {k.removeprefix("val/").removesuffix("/success"): v.iloc[-1] for k, v in final.items()
               if k.endswith("success") and len(v)}  # fmt: skip
        shown = ", ".join(f"{k} {pct(v)}" for k, v in val.items()) or NA
        kind = next((k for k, signal in ON_POLICY.items() if signal in log), "supervised")
        if kind == "supervised":
            record = {"model": name, "kind": kind, "steps": int(col(log, "step").max())}
            record.update({f"val_{k}": 100 * float(v) for k, v in val.items()})
            rows.append([name, kind, str(record["steps"])] + [NA] * 5 + [shown])
            tidy.append(record)
            continue
        ns = ON_POLICY[kind].split("/")[0]  # distill, rl
        sig, own = col(log, ON_POLICY[kind]), col(log, f"{ns}/student_logprob")
        dead, parse = col(log, f"{ns}/dead_mass"), col(log, f"{ns}/parse_rate")
        record = {
            "model": name, "kind": kind, "steps": int(col(log, "step").max()),
            f"{SIGNAL[kind]}_first": sig.head(EDGE).mean(),
            f"{SIGNAL[kind]}_last": sig.tail(EDGE).mean(),
            "student_logprob_min": own.min(), "dead_mass_max": dead.max() if len(dead) else None,
            "parse_first": 100 * parse.head(EDGE).mean(), "parse_last": 100 * parse.tail(EDGE).mean(),
        }  # fmt: skip
        record.update({f"val_{k}": 100 * float(v) for k, v in val.items()})
        problems = []
        if record["dead_mass_max"] is None:
            problems.append("no dead-mass log")
        elif record["dead_mass_max"] >= HEALTH["dead_mass"]:
            problems.append(f"dead mass {record['dead_mass_max']:.2g}")
        if record["student_logprob_min"] < HEALTH["student_logprob"]:
            problems.append(f"own log-prob {record['student_logprob_min']:.2f}")
        if record["parse_last"] < record["parse_first"]:
            problems.append("parse rate fell")
        record["healthy"] = not problems
        if problems:
            notes.append(f"{name}: " + ", ".join(problems))
        dead_text = NA if record["dead_mass_max"] is None else f"{record['dead_mass_max']:.1e}"
        first, last = record[f"{SIGNAL[kind]}_first"], record[f"{SIGNAL[kind]}_last"]
        rows.append([
            name, kind, str(record["steps"]),
            f"{SIGNAL[kind].replace('kl', 'KL')} {first:.3f} -> {last:.3f}",
            f"{record['student_logprob_min']:.2f}", dead_text,
            f"{record['parse_first']:.1f} -> {record['parse_last']:.1f}",
            "yes" if record["healthy"] else "NO", shown,
        ])  # fmt: skip
        tidy.append(record)
    if not logs:
        notes.append("no training logs given")
    return Table(
        "Training",
        "Each training run. Distillation and RL: the training signal (reverse KL in nats/token, "
        f"or RL's mean reward; mean of the first and last {EDGE} steps), the lowest log-prob of the student's own samples (nats/token), the "
        "largest mass the raw student put on ids it can never sample, the samples' parse rate "
        f"(percent, first and last {EDGE} steps), and whether the run is healthy (dead mass below "
        f"{HEALTH['dead_mass']:g} and own log-prob at least {HEALTH['student_logprob']:g} at every "
        "step, parse rate not lower at the end). Last column: final greedy validation success "
        "(percent) of each validated task.",
        pd.DataFrame(tidy),
        [
            ("", "model"),
            ("", "kind"),
            ("", "steps"),
            ("", "signal"),
            ("", "own log-prob min"),
            ("", "dead mass max"),
            ("", "parse rate"),
            ("", "healthy"),
            ("", "validation"),
        ],  # fmt: skip
        rows,
        notes,
    )


def premise_table(df: pd.DataFrame, cfg: TablesConfig) -> Table:
    """The base model's premise from its validation records (conditions as in PREMISE_COLUMNS)."""
    base = df[df["method"] == "base"] if len(df) else df
    stats = _per_and_macro(base, ["condition"], cfg) if len(base) else pd.DataFrame()
    at = _lookup(stats, ["condition", "puzzle"]) if len(stats) else {}
    seeing = base[base["condition"] == "image"] if len(base) else base
    seen = metrics.perception(seeing, ["puzzle"]) if len(seeing) else pd.DataFrame()
    puzzles = _unique(base, "puzzle") + ([MACRO] if len(base) else [])
    rows, tidy = [], []
    for p in puzzles:
        cells, record = [], {"puzzle": p}
        for cond, col, _ in PREMISE_COLUMNS:
            r = at.get((cond, p))
            cells.append(_cell(r, col))
            key = f"{SHORT[col]}_{cond}"
            for suffix in ("", "_lo", "_hi"):
                record[key + suffix] = NA if r is None else 100 * float(r[f"{col}{suffix}"])
        if p == MACRO:
            right = seen["state_correct"].mean() if len(seen) else None
            fields = "-"
        else:
            mine = seen[seen["puzzle"] == p] if len(seen) else seen
            right = float(mine["state_correct"].iloc[0]) if len(mine) else None
            names = [c for c in mine.columns if c.startswith("field/")] if len(mine) else []
            fields = ", ".join(
                f"{c.removeprefix('field/')} {pct(mine[c].iloc[0])}"
                for c in names
                if pd.notna(mine[c].iloc[0])
            )
        record["state_correct"] = NA if right is None else 100 * float(right)
        n = at.get(("image", p))
        rows.append([p, NA if n is None else str(int(n["n"])), *cells, pct(right), fields or "-"])
        tidy.append(record)
    notes = []
    if len(base):
        for cond, col, lo, hi in PREMISE_TARGETS:
            r = at.get((cond, MACRO))
            if r is None:
                notes.append(f"target {cond} {LABEL.get(col, col)} {lo}-{hi}: no {cond} records")
                continue
            v = 100 * float(r[col])
            verdict = "met" if lo <= v <= hi else "NOT met"
            what = "parse rate" if col == "parsed" else LABEL[col]
            notes.append(f"target {cond} {what} {lo}-{hi}%: {v:.1f} ({verdict})")
    else:
        notes.append("no premise records: the base model was not evaluated on the validation split")
    return Table(
        "Premise",
        _caption(
            cfg,
            "The base model on the validation split, before any method: SR given the state as "
            "text, given the teacher's prompt (state and reference plan), and from the picture "
            "(with its parse rate, the share of states read entirely right and each field's "
            "accuracy), and SR with the true state forced as the start of the reply.",
        ),
        pd.DataFrame(tidy),
        [("", "puzzle"), ("", "n")]
        + [("", h) for *_, h in PREMISE_COLUMNS]
        + [("perception", "all right"), ("perception", "fields")],
        rows,
        notes,
    )


# two-sided 97.5% quantiles of Student's t (a 95% interval), by degrees of freedom
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip


def _t_quantile(dof: int, confidence: float) -> tuple[float, str]:
    """The t quantile of a two-sided interval and a note when it is an approximation."""
    if abs(confidence - 0.95) < 1e-9:
        return _T975[max(k for k in _T975 if k <= dof)], "" if dof in _T975 else "(t rounded down)"
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2), "(normal quantile: t known only for 95%)"


def seeds_table(df: pd.DataFrame, cfg: TablesConfig) -> Table:
    """Macro SR / EM / PR per seed of each replicated method, mean and t-interval across seeds."""
    image = metrics.image_records(df) if len(df) else df
    counts = image.groupby("method")["replicate"].nunique() if len(image) else pd.Series(dtype=int)
    methods = [m for m in _unique(image, "method") if counts.get(m, 0) > 1]
    rows, tidy, notes = [], [], []
    width = max((int(counts[m]) for m in methods), default=0)
    for m in methods:
        mine = image[image["method"] == m]
        per_seed = metrics.macro(mine, ["replicate"]).sort_values("replicate")  # no bootstrap
        record, cells = {"method": m, "seeds": len(per_seed)}, []
        for c in METRICS:
            values = per_seed[c].astype(float).to_numpy()
            mean, sd = float(values.mean()), float(values.std(ddof=1))
            q, note = _t_quantile(len(values) - 1, cfg.confidence)
            half = q * sd / len(values) ** 0.5
            record.update(
                {f"{SHORT[c]}_mean": 100 * mean, f"{SHORT[c]}_sd": 100 * sd,
                 f"{SHORT[c]}_lo": 100 * (mean - half), f"{SHORT[c]}_hi": 100 * (mean + half)}
            )  # fmt: skip
            if c == "success":
                for k, v in zip(per_seed["replicate"], values, strict=True):
                    record[f"sr_seed{int(k)}"] = 100 * float(v)
                cells += [pct(v) for v in values] + [NA] * (width - len(values))
            cells.append(pct_ci(mean, mean - half, mean + half))
            if note and note not in notes:
                notes.append(note)
        rows.append([m, str(len(per_seed)), *cells])
        tidy.append(record)
    if not methods:
        notes.append("no method was trained with more than one seed (config replicates)")
    return Table(
        "Seeds",
        "Macro SR per seed (image input, percent) of the methods trained with several seeds, "
        f"and the mean of macro SR / EM / PR over seeds with a {100 * cfg.confidence:g}% "
        "t-interval across seeds (seed-to-seed spread, not test-set noise).",
        pd.DataFrame(tidy),
        [("", "method"), ("", "seeds")]
        + [("macro SR", f"seed {k}") for k in range(width)]
        + [("mean over seeds", LABEL[c]) for c in METRICS],
        rows,
        notes,
    )


BUILDERS = {
    "main": main_table,
    "per_level": per_level_table,
    "ablations": ablations_table,
    "modality_gap": modality_gap_table,
    "perception": perception_table,
    "errors": errors_table,
    "premise": premise_table,
    "seeds": seeds_table,
    "training": training_table,
}


def build_tables(
    df: pd.DataFrame,
    cfg: TablesConfig,
    premise: pd.DataFrame | None = None,
    logs: dict[str, pd.DataFrame] | None = None,
) -> dict[str, Table]:
    """Every table; `premise` are the base model's validation records (empty if None), `logs`
    the training logs by model. The seeds table reads every replicate, the others each method's
    first seed."""
    premise = df.iloc[:0] if premise is None else premise
    first = df[df["replicate"] == 0] if len(df) else df
    inputs = {"premise": premise, "seeds": df, "training": logs or {}}
    built = {name: BUILDERS[name](inputs.get(name, first), cfg) for name in TABLES}
    externals = metrics.external_methods(df)
    return {name: mark_external(t, externals) for name, t in built.items()}


def mark_external(t: Table, externals: set[str]) -> Table:
    """Every row of an external model marked: "(external)" after its name where rows name a
    method, an `external` column (the csv's last), and a note saying what the mark means."""
    if ("", "method") not in t.columns or "method" not in t.data:
        return t
    at = t.columns.index(("", "method"))
    rows = [[*r[:at], method_label(r[at], externals), *r[at + 1 :]] for r in t.rows]
    data = t.data.copy()
    data["external"] = data["method"].isin(externals)
    shown = set(t.data["method"]) & externals
    notes = t.notes + ([EXTERNAL_NOTE] if shown else [])
    return dataclasses.replace(t, data=data, rows=rows, notes=notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mgsd tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--records", nargs="+", required=True, help="evaluation record Parquet files")
    ap.add_argument(
        "--premise", nargs="*", default=[], help="the base model's validation records (premise)"
    )
    ap.add_argument("--train-logs", nargs="*", default=[], help="models/<m>/train_log.jsonl files")
    ap.add_argument("--config", default="{}", help="JSON of the tables config section (or @FILE)")
    ap.add_argument("--out", required=True, help="folder for the tables")
    args = ap.parse_args(argv)
    try:
        cfg = load_section(TablesConfig, args.config, "tables")
        df = metrics.load_records(args.records)
        premise = metrics.load_records(args.premise) if args.premise else None
        logs = load_train_logs(args.train_logs)
    except ValueError as e:  # ConfigError and RecordError: the message names the key or file
        print(f"mgsd tables: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    for name, table in build_tables(df, cfg, premise, logs).items():
        write_table(table, out, name)
    atomic_write_text(out / CONFIG_FILE, section_json(cfg) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
