"""`mgsd plots`: every declared figure is written in every format, panels without data say so,
method colours are fixed, and training logs are read the way resumed runs write them."""

from __future__ import annotations

import json

import matplotlib.colors as mcolors
import pytest

from mgsd.data.records import write_eval
from mgsd.eval import metrics
from mgsd.report import plots
from mgsd.report.style import EXTERNAL_COLORS, METHOD_COLORS


def rec(rid, puzzle, method, condition, level, success, external=False):
    return {
        "id": rid, "puzzle": puzzle, "level": level, "method": method, "replicate": 0,
        "external": external, "condition": condition,
        "prompt": "p", "reply": "r", "actions": "", "success": success, "exact_match": success,
        "progress_rate": 1.0 if success else 0.0, "parsed": True, "illegal_kind": "",
        "parser": "strict", "success_strict": success, "success_paper": success,
        "state_parsed": True, "state_correct": success or rid.endswith("0"),
        "state_fields": json.dumps({"level": True}), "reply_tokens": 3, "seconds": 0.1,
    }  # fmt: skip


def records(
    tmp_path,
    methods=("base", "mgsd"),
    conditions=("image", "text", "image_oracle_state"),
    externals=(),
):
    paths = []
    for k, m in enumerate((*methods, *externals)):
        for puzzle, levels in (("frozenlake", (3, 4)), ("maze", (3,))):
            for cond in conditions:
                rows = [
                    rec(
                        f"{puzzle}-{lv}-{i}",
                        puzzle,
                        m,
                        cond,
                        lv,
                        (i + k + lv) % 3 == 0,
                        external=m in externals,
                    )  # fmt: skip
                    for lv in levels
                    for i in range(6)
                ]
                paths.append(
                    str(write_eval(rows, tmp_path / "eval" / m / puzzle / f"{cond}.parquet"))
                )
    return paths


def log(tmp_path, method, rows):
    path = tmp_path / "models" / method / "train_log.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


SFT = [{"step": s, "train/loss": 2.0 / s} for s in range(1, 6)] + [{"step": 5, "val/success": 0.5}]
DISTILL = [
    {"step": s, "distill/reverse_kl": 1.0 / s, "distill/teacher_logprob": -0.5,
     "distill/student_logprob": -0.4, "train/loss": 0.01}
    for s in range(1, 6)
]  # fmt: skip


def test_cli_writes_every_figure_in_every_format(tmp_path):
    logs = [log(tmp_path, "grounding", SFT), log(tmp_path, "mgsd", DISTILL)]
    out = tmp_path / "fig"
    config = json.dumps({"formats": ["png", "pdf"], "dpi": 60})
    argv = ["--records", *records(tmp_path), "--train-logs", *logs, "--config", config]
    assert plots.main([*argv, "--out", str(out)]) == 0
    names = plots.figure_files(("png", "pdf"))
    assert len(names) == 2 * len(plots.FIGURES)
    for name in names:
        head = (out / name).read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if name.endswith(".png") else b"%PDF"), name
    assert json.loads((out / "plots_config.json").read_text())["dpi"] == 60
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "plots_config.json"])  # only


def test_figures_without_data_still_written(tmp_path):
    out = tmp_path / "fig"
    paths = records(tmp_path, methods=("base",), conditions=("text",))  # no image records at all
    rc = plots.main(["--records", *paths, "--config", '{"formats": ["png"]}', "--out", str(out)])
    assert rc == 0
    for name in plots.figure_files(("png",)):
        assert (out / name).stat().st_size > 1000, name


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_training_curves_panels_without_keys_say_no_data(tmp_path):
    logs = plots.load_train_logs([log(tmp_path, "grounding", SFT)])
    fig = plots.training_curves(logs)
    titles = {ax.get_title(): ax for ax in fig.axes}
    assert "no data" in [t.get_text() for t in titles["Distillation: reverse KL"].texts]
    assert "no data" not in [t.get_text() for t in titles["SFT loss"].texts]
    assert titles["SFT loss"].get_xlabel() == "optimizer step"
    assert _texts(plots.training_curves({})).count("no data") == len(plots.PANELS)


def test_distillation_loss_stays_out_of_the_sft_panel(tmp_path):
    logs = plots.load_train_logs([log(tmp_path, "mgsd", DISTILL)])
    titles = {ax.get_title(): ax for ax in plots.training_curves(logs).axes}
    assert "no data" in [t.get_text() for t in titles["SFT loss"].texts]
    assert len(titles["Distillation: reverse KL"].lines) == 1


def test_load_train_logs_merges_steps_of_resumed_runs(tmp_path):
    rows = [{"step": 1, "train/loss": 3.0}, {"step": 2, "train/loss": 2.0},
            {"step": 2, "train/loss": 1.5}, {"step": 2, "val/success": 0.25}]  # fmt: skip
    (frame,) = plots.load_train_logs([log(tmp_path, "sft_direct", rows)]).values()
    assert list(frame["step"]) == [1, 2]
    assert frame.loc[1, "train/loss"] == 1.5 and frame.loc[1, "val/success"] == 0.25
    assert list(plots.load_train_logs([log(tmp_path, "sft_direct", rows)])) == ["sft_direct"]


def test_load_train_logs_names_file_and_line(tmp_path):
    path = tmp_path / "models" / "mgsd" / "train_log.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"step": 1}\n{"step": 2,\n')
    with pytest.raises(ValueError, match=r"train_log\.jsonl:2"):
        plots.load_train_logs([path])
    with pytest.raises(ValueError, match="cannot read"):
        plots.load_train_logs([tmp_path / "missing.jsonl"])


def test_one_fixed_colour_per_method(tmp_path):
    df = metrics.load_records(records(tmp_path))
    fig = plots.success_vs_side(df)
    colours = {mcolors.to_hex(line.get_color()) for ax in fig.axes for line in ax.lines}
    expected = {METHOD_COLORS[m].lower() for m in ("base", "symbolic", "mgsd")}
    assert expected <= colours
    assert len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)
    assert [ax.get_title() for ax in fig.axes] == ["frozenlake", "maze"]
    assert fig.axes[0].get_ylabel() == "success rate (%)"


def test_bad_format_is_named(tmp_path, capsys):
    rc = plots.main(["--records", *records(tmp_path, ("base",), ("image",)),
                     "--config", '{"formats": ["gif"]}', "--out", str(tmp_path)])  # fmt: skip
    assert rc == 1 and "'gif'" in capsys.readouterr().err


def test_the_workflow_declares_these_figures():
    from mgsd import workflow

    assert workflow.FIGURES == plots.FIGURES
    assert workflow.REPORT_CONFIGS["figures"] == plots.CONFIG_FILE


def test_external_models_are_labelled_and_styled_in_every_method_figure(tmp_path):
    df = metrics.load_records(records(tmp_path, externals=("qwen", "llava")))
    fig = plots.success_vs_side(df)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["base", "symbolic", "mgsd", "llava (external)", "qwen (external)"]
    dotted = {mcolors.to_hex(h.get_color()) for h in fig.legends[0].legend_handles
              if h.get_linestyle() == ":"}  # fmt: skip
    assert dotted == {EXTERNAL_COLORS[0].lower(), EXTERNAL_COLORS[1].lower()}
    for figure in (plots.modality_gap(df), plots.error_decomposition(df)):
        ticks = [t.get_text() for t in figure.axes[0].get_xticklabels()]
        assert ticks[-2:] == ["llava (external)", "qwen (external)"], ticks
        assert "mgsd" in ticks and "mgsd (external)" not in ticks
    out = tmp_path / "fig"
    paths = records(tmp_path, externals=("qwen",))
    assert (
        plots.main(["--records", *paths, "--config", '{"formats": ["png"]}', "--out", str(out)])
        == 0
    )
