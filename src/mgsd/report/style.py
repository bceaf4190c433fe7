"""One look for every table and figure: method colours and markers, condition styles, number
formats, and the table renderers (csv, markdown, LaTeX). Imports neither
matplotlib nor torch, so tables stay light.

Colours are the Okabe-Ito colour-blind-safe palette (plus its usual grey), one per method, the
same in every figure; the method (mgsd) gets the strongest colour, vermillion. External models
(config `external_models`, evaluated as given) are marked wherever a method is named:
"<name> (external)", dark earth colours in their order of appearance, dotted lines with hollow
diamonds, cross-hatched bars.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mgsd.config import METHODS
from mgsd.io import atomic_write, atomic_write_text

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "grey": "#999999",
}

METHOD_COLORS = {
    "base": OKABE_ITO["grey"],
    "symbolic": OKABE_ITO["black"],
    "sft_direct": OKABE_ITO["orange"],
    "grounding": OKABE_ITO["sky_blue"],
    "grounding_sft": "#1F5F8B",  # a darker sky blue: grounding, then more supervision
    "opd_only": OKABE_ITO["bluish_green"],
    "mgsd": OKABE_ITO["vermillion"],
    "mgsd_no_plan": OKABE_ITO["blue"],
    "mgsd_full_kl": OKABE_ITO["reddish_purple"],
    "mgsd_teacher_grounded": OKABE_ITO["yellow"],
    "grpo_only": "#6B8E23",  # olive: RL from the base, beside opd_only's green
    "grpo": "#8B4513",  # brown: RL in mgsd's place, near its vermillion
}
METHOD_MARKERS = dict(
    zip(METHODS, ("o", "*", "s", "^", "<", "v", "D", "P", "X", "h", "p", "d"), strict=True)
)

# Bars of one method under the three conditions: same colour, fading and hatched toward text.
CONDITION_STYLES = {
    "image": {"alpha": 1.0, "hatch": ""},
    "image_oracle_state": {"alpha": 0.6, "hatch": "//"},
    "text": {"alpha": 0.3, "hatch": ".."},
}
CONDITION_LABELS = {
    "image": "image",
    "image_oracle_state": "image + oracle state",
    "text": "text state",
}
NA = "–"  # shown for a value that does not exist (no records)
EXTERNAL = " (external)"  # after the name of an external model, in every table and figure
EXTERNAL_NOTE = (
    "rows marked (external) are models evaluated as given (config external_models), "
    "not trained by this pipeline"
)
EXTERNAL_COLORS = ("#6B4226", "#2F4F4F", "#8E7618", "#5B3A7A", "#3D5C1E", "#7A2E2E")


def method_label(method: str, externals: Iterable[str] = ()) -> str:
    """The name a table or figure shows: external models marked as such."""
    return method + EXTERNAL if method in set(externals) else method


def method_color(method: str, externals: Sequence[str] = ()) -> str:
    """The method's colour; an external model's by its place in `externals`; other methods
    outside the fixed list get a dark grey."""
    if method in externals:
        return EXTERNAL_COLORS[list(externals).index(method) % len(EXTERNAL_COLORS)]
    return METHOD_COLORS.get(method, "#555555")


def method_marker(method: str) -> str:
    return METHOD_MARKERS.get(method, "o")


def pct(x: float, digits: int = 1, signed: bool = False) -> str:
    """A fraction as a percent string (`0.425 -> "42.5"`); NaN gives `NA`."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return NA
    return f"{100 * x:{'+' if signed else ''}.{digits}f}"


def pct_ci(mean: float, lo: float, hi: float, signed: bool = False) -> str:
    """Mean and interval as `"42.5 [39.4, 45.6]"` (percent); without an interval just the mean."""
    if isinstance(mean, float) and math.isnan(mean):
        return NA
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (lo, hi)):
        return pct(mean, signed=signed)
    return f"{pct(mean, signed=signed)} [{pct(lo, signed=signed)}, {pct(hi, signed=signed)}]"


# ---------------------------------------------------------------- tables


@dataclass
class Table:
    """One report table: tidy numbers for the csv, formatted cells for md and tex."""

    title: str
    caption: str
    data: pd.DataFrame  # the csv
    columns: list[tuple[str, str]]  # (group, label) of each shown column; group "" for none
    rows: list[list[str]]  # formatted cells, one list per shown row
    notes: list[str] = field(default_factory=list)  # what is missing, one line each
    keys: int = 1  # leading key columns (left-aligned); the rest are values


def _flat(col: tuple[str, str]) -> str:
    return f"{col[0]} {col[1]}" if col[0] else col[1]


def to_markdown(t: Table) -> str:
    def esc(s: object) -> str:
        return str(s).replace("|", "\\|")

    lines = [f"# {t.title}", "", t.caption, ""]
    lines.append("| " + " | ".join(esc(_flat(c)) for c in t.columns) + " |")
    lines.append(
        "|" + "|".join("---" if i < t.keys else "---:" for i in range(len(t.columns))) + "|"
    )
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in t.rows]
    lines += ["", *(f"Note: {n}." for n in t.notes)]
    return "\n".join(lines).rstrip() + "\n"


_TEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    NA: "--", "Δ": r"$\Delta$", "−": "$-$",
}  # fmt: skip


def _tex(s: object) -> str:
    out = "".join(_TEX.get(ch, ch) for ch in str(s))
    return "{" + out + "}" if out.startswith("[") else out  # after `\\`, `[` would be an option


def to_latex(t: Table) -> str:
    """A booktabs tabular (for \\input), grouped column headers as \\multicolumn."""
    spec = "".join("l" if i < t.keys else "r" for i in range(len(t.columns)))
    lines = [f"% {t.title}. {t.caption}", *(f"% Note: {n}." for n in t.notes)]
    lines += ["% needs \\usepackage{booktabs}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    spans: list[list] = []  # [group, first column, last column], 1-based
    for i, (g, _) in enumerate(t.columns, start=1):
        if spans and spans[-1][0] == g:
            spans[-1][2] = i
        else:
            spans.append([g, i, i])
    if any(g for g, _, _ in spans):
        head = [
            f"\\multicolumn{{{b - a + 1}}}{{c}}{{{_tex(g)}}}" if g else " & " * (b - a)
            for g, a, b in spans
        ]
        lines.append(" & ".join(head) + " \\\\")
        lines.append(" ".join(f"\\cmidrule(lr){{{a}-{b}}}" for g, a, b in spans if g))
    lines += [" & ".join(_tex(label) for _, label in t.columns) + " \\\\", "\\midrule"]
    lines += [" & ".join(_tex(v) for v in row) + " \\\\" for row in t.rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(t: Table, out: Path, name: str) -> list[Path]:
    """`<out>/<name>.csv`, `.md` and `.tex`, each written atomically."""
    return [
        atomic_write(
            out / f"{name}.csv", lambda tmp: t.data.to_csv(tmp, index=False, float_format="%.3f")
        ),
        atomic_write_text(out / f"{name}.md", to_markdown(t)),
        atomic_write_text(out / f"{name}.tex", to_latex(t)),
    ]
