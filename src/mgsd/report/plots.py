"""`mgsd plots`: the paper's figures from evaluation records and training logs (never torch).

    mgsd plots --records results/R/eval/*/*/*.parquet \\
        --train-logs results/R/models/*/train_log.jsonl \\
        --config '{"formats": ["png", "pdf"], "dpi": 150}' --out results/R/figures

Writes <out>/<name>.<format> for every name in `FIGURES` and every configured format
(`figure_files(formats)` lists them), plus plots_config.json (the section used):

- success_vs_side: one panel per puzzle, success rate against the grid side N, a line per method
  (image input; symbolic = base given the text state, dashed), 95% CI error bars.
- modality_gap: per method, macro success under image / image + oracle state / text input.
- error_decomposition: per method, perception and planning errors stacked, as a share of all
  test instances (image input), one panel per puzzle and one for the macro average.
- training_curves: SFT losses (train solid, validation dashed), distillation reverse KL, the
  teacher's and the student's log-probs of the student's samples, validation success, and for
  the on-policy runs (distillation solid, RL dotted) the samples' parse rate, dead mass and
  success, and RL's mean reward.

External models (config `external_models`) appear in the first three figures like any method,
labelled "<name> (external)" and drawn in their own style (`mgsd.report.style`).

Error bars are percentile-bootstrap intervals with the tables' defaults (`TablesConfig()`: 95%,
1000 resamples, seed 0), since the plots section has no bootstrap settings. A training log's
method is its folder's name (models/<method>/train_log.jsonl); a log holds SFT curves unless it
has `distill/` or `rl/` keys, so the SFT-loss panel leaves out the on-policy runs.
A panel without data still appears and says "no data". Figures are drawn with the Agg canvas
(no pyplot, no display) and written atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from mgsd.config import PlotsConfig, TablesConfig, load_section, section_json
from mgsd.eval import metrics
from mgsd.io import atomic_write, atomic_write_text
from mgsd.report.logs import load_train_logs
from mgsd.report.style import (
    CONDITION_LABELS,
    CONDITION_STYLES,
    method_color,
    method_label,
    method_marker,
)

FIGURES = ("success_vs_side", "modality_gap", "error_decomposition", "training_curves")
CI = TablesConfig()
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "hatch.linewidth": 0.6,
    "pdf.fonttype": 42,  # embed TrueType, so the text stays editable
}
# (title, y label, [(key, line style, legend label)]) of the training-curve panels
PANELS = (
    (
        "SFT loss",
        "cross-entropy (nats/token)",
        [("train/loss", "-", "train"), ("val/loss", "--", "validation")],
    ),
    (
        "Distillation: reverse KL",
        "reverse KL (nats/token)",
        [("distill/reverse_kl", "-", "sampled estimate")],
    ),
    (
        "Distillation: log-prob of the samples",
        "log-prob (nats/token)",
        [("distill/teacher_logprob", "-", "teacher"), ("distill/student_logprob", "--", "student")],
    ),
    ("Validation success", "success rate (%)", [("val/success", "-", "greedy")]),
    (
        "On-policy: samples that parse",
        "parse rate (%)",
        [("distill/parse_rate", "-", "distillation"), ("rl/parse_rate", ":", "RL")],
    ),
    (
        "On-policy: mass on ids never sampled",
        "dead mass (probability)",
        [("distill/dead_mass", "-", "distillation"), ("rl/dead_mass", ":", "RL")],
    ),
    (
        "On-policy: samples that succeed",
        "success rate (%)",
        [("distill/sample_success", "-", "distillation"), ("rl/success", ":", "RL")],
    ),
    ("RL: reward of the samples", "mean reward", [("rl/reward", ":", "RL")]),
)
PERCENT = (
    "val/success", "distill/parse_rate", "rl/parse_rate", "distill/sample_success", "rl/success"
)  # fmt: skip  # logged as fractions, plotted in percent


CONFIG_FILE = "plots_config.json"  # the section the figures were made with


def figure_files(formats: Iterable[str] = ("png", "pdf")) -> list[str]:
    """The file names `main` writes into --out besides `CONFIG_FILE` (the Snakefile declares
    both)."""
    return [f"{name}.{fmt}" for name in FIGURES for fmt in formats]


# ---------------------------------------------------------------- helpers


def _new(ncols: int, width: float, height: float, nrows: int = 1) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure on the Agg canvas and its axes, flattened row by row."""
    fig = Figure(figsize=(max(width, 6.0), height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(max(1, nrows), max(1, ncols), squeeze=False).ravel()


def _no_data(ax, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _methods(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(metrics.order(df, ["method"])["method"])) if len(df) else []


def _puzzles(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(metrics.order(df, ["puzzle"])["puzzle"])) if len(df) else []


def _externals(df: pd.DataFrame) -> list[str]:
    """The external models among the records, in report order."""
    return [m for m in _methods(df) if m in metrics.external_methods(df)]


def _yerr(rows: pd.DataFrame, col: str = "success") -> np.ndarray:
    """Asymmetric error bars (2, K) in percent from `<col>_lo` / `<col>_hi`."""
    return 100 * np.stack([rows[col] - rows[f"{col}_lo"], rows[f"{col}_hi"] - rows[col]])


def _method_style(m: str, externals: list[str]) -> dict:
    """Colour, marker and dash of a method's line: the same in every figure; external models
    dotted, with hollow diamonds."""
    if m in externals:
        return {"color": method_color(m, externals), "marker": "D", "mfc": "white",
                "mec": method_color(m, externals), "mew": 1.2, "ls": ":"}  # fmt: skip
    return {
        "color": method_color(m), "marker": method_marker(m), "mec": "black", "mew": 0.4,
        "ls": "--" if m == "symbolic" else "-",
    }  # fmt: skip


def _method_legend(fig: Figure, methods: list[str], externals: list[str]) -> None:
    """One entry per method, below the panels (a right-hand legend would meet the title)."""
    if methods:
        handles = [Line2D([], [], **_method_style(m, externals)) for m in methods]
        labels = [method_label(m, externals) for m in methods]
        fig.legend(handles, labels, loc="outside lower center", ncols=min(5, len(methods)),
                   frameon=False)  # fmt: skip


# ---------------------------------------------------------------- the figures


def success_vs_side(df: pd.DataFrame) -> Figure:
    recs = metrics.main_records(df)
    keys = ["puzzle", "level", "method"]
    stats = metrics.summarize(recs, keys, CI.bootstrap, CI.confidence, CI.seed)
    puzzles, methods, externals = _puzzles(recs), _methods(stats), _externals(recs)
    fig, axes = _new(len(puzzles), 3.4 * max(1, len(puzzles)) + 1.6, 3.4)
    fig.suptitle("Success rate against grid side (image input; symbolic = base given the text)")
    if not puzzles:
        _no_data(axes[0], "success rate")
    for ax, puzzle in zip(axes, puzzles, strict=False):
        mine = stats[stats["puzzle"] == puzzle]
        for i, m in enumerate(methods):
            rows = mine[mine["method"] == m].sort_values("level")
            if rows.empty:
                continue
            dodge = (i - (len(methods) - 1) / 2) * 0.04  # keep error bars apart
            x, y = rows["level"] + dodge, 100 * rows["success"]
            ax.errorbar(x, y, yerr=_yerr(rows), **_method_style(m, externals), ms=5, lw=1.4,
                        capsize=2, elinewidth=0.8)  # fmt: skip
        levels = sorted(set(mine["level"]))
        ax.set(title=puzzle, xlabel="grid side N (cells)", xticks=levels, ylim=(-3, 103))
        ax.set_xlim(min(levels) - 0.5, max(levels) + 0.5)
    axes[0].set_ylabel("success rate (%)")
    _method_legend(fig, methods, externals)
    return fig


def modality_gap(df: pd.DataFrame) -> Figure:
    stats = metrics.macro(df, ["method", "condition"], CI.bootstrap, CI.confidence, CI.seed)
    methods, externals = _methods(stats), _externals(df)
    fig, (ax,) = _new(1, 1.0 * max(4, len(methods)) + 2.4, 3.6)
    title = "Modality gap: success by input (macro over puzzles)"
    if not methods:
        _no_data(ax, title)
        return fig
    width = 0.8 / len(CONDITION_STYLES)
    at = {(r["method"], r["condition"]): r for _, r in stats.iterrows()}
    for j, (cond, style) in enumerate(CONDITION_STYLES.items()):
        for i, m in enumerate(methods):
            r = at.get((m, cond))
            if r is None:
                continue
            ax.bar(i + (j - 1) * width, 100 * r["success"], width, yerr=_yerr(pd.DataFrame([r])),
                   capsize=2, error_kw={"elinewidth": 0.8}, edgecolor="black", lw=0.5,
                   facecolor=to_rgba(method_color(m, externals), style["alpha"]),
                   hatch=style["hatch"])  # fmt: skip
    labels = [method_label(m, externals) for m in methods]
    ax.set_xticks(range(len(methods)), labels, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set(title=title, ylabel="success rate (%, macro over puzzles)", ylim=(0, 103))
    ax.set_xlabel("method")
    handles = [
        Patch(facecolor=to_rgba("#777777", s["alpha"]), edgecolor="black", lw=0.5, hatch=s["hatch"])
        for s in CONDITION_STYLES.values()
    ]
    fig.legend(
        handles,
        [CONDITION_LABELS[c] for c in CONDITION_STYLES],
        title="input",
        loc="outside right upper",
        frameon=False,
    )
    return fig


def error_decomposition(df: pd.DataFrame) -> Figure:
    stats = metrics.error_decomposition(metrics.image_records(df), ["method", "puzzle"])
    rates = ["perception_rate", "planning_rate"]
    if len(stats):
        macro = stats.groupby("method", sort=False)[rates].mean().reset_index()
        stats = pd.concat([stats, macro.assign(puzzle="macro")], ignore_index=True)
    panels, methods, externals = _puzzles(stats), _methods(stats), _externals(df)
    ncols = min(2, len(panels))  # two panels per row: each holds a bar per method
    nrows = -(-len(panels) // max(1, ncols))
    width = 1.0 + 0.45 * max(4, len(methods)) * max(1, ncols)
    fig, axes = _new(ncols, width, 0.6 + 3.0 * max(1, nrows), nrows)
    fig.suptitle("Failures split into perception and planning errors (image input)")
    if not panels:
        _no_data(axes[0], "perception and planning errors")
    for ax, panel in zip(axes, panels, strict=False):
        mine = stats[stats["puzzle"] == panel].set_index("method")
        for i, m in enumerate(methods):
            if m not in mine.index:
                continue
            perc, plan = 100 * mine.loc[m, "perception_rate"], 100 * mine.loc[m, "planning_rate"]
            color = method_color(m, externals)
            ax.bar(i, perc, 0.7, facecolor=color, edgecolor="black", lw=0.5)
            ax.bar(i, plan, 0.7, bottom=perc, facecolor=to_rgba(color, 0.35), edgecolor="black",
                   lw=0.5, hatch="//")  # fmt: skip
        title = "macro over puzzles" if panel == "macro" else panel
        ax.set(title=title, ylim=(0, 103), ylabel="share of test instances (%)")
        labels = [method_label(m, externals) for m in methods]
        ax.set_xticks(range(len(methods)), labels, rotation=35, ha="right", rotation_mode="anchor")
    for ax in axes[len(panels) :] if panels else []:
        ax.set_visible(False)
    handles = [
        Patch(facecolor="#777777", edgecolor="black", lw=0.5),
        Patch(facecolor=to_rgba("#777777", 0.35), edgecolor="black", lw=0.5, hatch="//"),
    ]
    if panels:
        fig.legend(
            handles,
            ["perception error (wrong state)", "planning error (right state)"],
            loc="outside lower center",
            ncols=2,
            frameon=False,
        )
    return fig


def _is_on_policy(log: pd.DataFrame) -> bool:
    return any(str(c).startswith(("distill/", "rl/")) for c in log.columns)


def _curve(ax, x: pd.Series, y: pd.Series, color: str, ls: str) -> None:
    """Sparse points (validation) with markers; long noisy series (per-step losses) faint, under
    a bold centred running mean."""
    if len(x) <= 30:
        ax.plot(x, y, color=color, ls=ls, lw=1.4, marker="o", ms=3)
        return
    ax.plot(x, y, color=color, ls=ls, lw=0.6, alpha=0.25)
    smooth = y.rolling(max(2, len(y) // 20), min_periods=1, center=True).mean()
    ax.plot(x, smooth, color=color, ls=ls, lw=1.4)


def training_curves(logs: dict[str, pd.DataFrame]) -> Figure:
    fig, axes = _new(4, 18.0, 6.4, nrows=2)
    fig.suptitle("Training curves")
    shown: list[str] = []
    for ax, (title, ylabel, keys) in zip(axes, PANELS, strict=True):
        drawn = set()
        for method, log in logs.items():
            if title == "SFT loss" and _is_on_policy(log):
                continue
            for key, ls, _ in keys:
                if key not in log:
                    continue
                pts = log[["step", key]].apply(pd.to_numeric, errors="coerce").dropna()
                if pts.empty:
                    continue
                y = pts[key] * (100 if key in PERCENT else 1)
                _curve(ax, pts["step"], y, method_color(method.split(" #")[0]), ls)
                drawn.add(key)
                shown += [method] if method not in shown else []
        if not drawn:
            _no_data(ax, title)
            continue
        ax.set(title=title, xlabel="optimizer step", ylabel=ylabel)
        if ylabel.endswith("(%)"):
            ax.set_ylim(-3, 103)
        if len(keys) > 1:
            ax.legend(
                [Line2D([], [], color="black", ls=ls) for k, ls, _ in keys if k in drawn],
                [lab for k, _, lab in keys if k in drawn],
                frameon=False,
            )
    if shown:
        shown = list(metrics.order(pd.DataFrame({"method": shown}), ["method"])["method"])
        handles = [Line2D([], [], color=method_color(m.split(" #")[0])) for m in shown]
        fig.legend(handles, shown, loc="outside right upper", title="method", frameon=False)
    return fig


def save(fig: Figure, out: Path, name: str, cfg: PlotsConfig) -> list[Path]:
    """`<out>/<name>.<fmt>` for every configured format, atomically."""

    def write(fmt: str) -> Callable[[Path], None]:
        # tight bbox: a long title on a narrow figure grows the canvas instead of being cut
        return lambda tmp: fig.savefig(tmp, format=fmt, dpi=cfg.dpi, bbox_inches="tight")

    return [atomic_write(out / f"{name}.{fmt}", write(fmt)) for fmt in cfg.formats]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mgsd plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--records", nargs="+", required=True, help="evaluation record Parquet files")
    ap.add_argument("--train-logs", nargs="*", default=[], help="models/<method>/train_log.jsonl")
    ap.add_argument("--config", default="{}", help="JSON of the plots config section (or @FILE)")
    ap.add_argument("--out", required=True, help="folder for the figures")
    args = ap.parse_args(argv)
    try:
        cfg = load_section(PlotsConfig, args.config, "plots")
        df = metrics.load_records(args.records)
        df = df[df["replicate"] == 0]  # each method's first seed, as in the tables
        logs = load_train_logs(args.train_logs)
    except ValueError as e:  # ConfigError, RecordError, bad logs: the message names the culprit
        print(f"mgsd plots: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    with matplotlib.rc_context(RC):
        figures = {
            "success_vs_side": success_vs_side(df),
            "modality_gap": modality_gap(df),
            "error_decomposition": error_decomposition(df),
            "training_curves": training_curves(logs),
        }
        for name, fig in figures.items():
            save(fig, out, name, cfg)
    atomic_write_text(out / CONFIG_FILE, section_json(cfg) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
