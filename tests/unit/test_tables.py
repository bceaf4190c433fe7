"""`mgsd tables` on hand-made records: golden values, every declared file, notes for missing
rows, error messages, and the LaTeX rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mgsd.data.records import EVAL_SCHEMA, write_eval
from mgsd.report import tables
from mgsd.report.style import EXTERNAL_NOTE, Table, to_latex, to_markdown

CONFIG = json.dumps({"bootstrap": 50, "confidence": 0.95, "seed": 0})


def rec(rid, puzzle, method, condition="image", level=3, success=False, **kw):
    row = {
        "id": rid, "puzzle": puzzle, "level": level, "method": method, "replicate": 0,
        "external": False, "condition": condition,
        "prompt": "p", "reply": "r", "actions": "", "success": success,
        "exact_match": success, "progress_rate": 1.0 if success else 0.0, "parsed": True,
        "illegal_kind": "", "parser": "strict", "state_parsed": True, "state_correct": True,
        "state_fields": json.dumps({"level": True}), "reply_tokens": 3, "seconds": 0.1,
    }  # fmt: skip
    row.update(kw)
    return {"success_strict": row["success"], "success_paper": row["success"], **row}


def hand_made() -> dict[str, list[dict]]:
    """frozenlake: 4 instances (a, b at side 3; c, d at side 4); maze: 2 (m, n)."""
    mgsd_fl = [
        rec("a", "frozenlake", "mgsd", success=True),
        rec("b", "frozenlake", "mgsd", success=True, exact_match=False, progress_rate=0.5),
        rec("c", "frozenlake", "mgsd", level=4, progress_rate=0.25, state_correct=False),
        rec("d", "frozenlake", "mgsd", level=4, parsed=False),
    ]  # SR 50, EM 25, PR 43.75; failures: c perception, d planning
    files = {"mgsd/frozenlake/image": mgsd_fl}
    files["mgsd/maze/image"] = [rec(i, "maze", "mgsd", success=True) for i in "mn"]
    for cond in ("image_oracle_state", "text"):
        for puzzle, ids in (("frozenlake", "abcd"), ("maze", "mn")):
            files[f"mgsd/{puzzle}/{cond}"] = [
                rec(i, puzzle, "mgsd", cond, success=True) for i in ids
            ]
    files["base/frozenlake/image"] = [rec(i, "frozenlake", "base") for i in "abcd"]
    files["base/maze/image"] = [rec("m", "maze", "base", success=True), rec("n", "maze", "base")]
    files["base/frozenlake/text"] = [
        rec(i, "frozenlake", "base", "text", success=True) for i in "abcd"
    ]
    files["base/maze/text"] = [rec(i, "maze", "base", "text", success=True) for i in "mn"]
    files["opd_only/frozenlake/image"] = [
        rec(i, "frozenlake", "opd_only", success=i == "c") for i in "abcd"
    ]  # vs mgsd per instance: -1, -1, +1, 0 -> -25
    files["opd_only/maze/image"] = [rec(i, "maze", "opd_only") for i in "mn"]  # -100
    return files


def write(tmp_path, files) -> list[str]:
    return [str(write_eval(rows, tmp_path / "eval" / f"{k}.parquet")) for k, rows in files.items()]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tables")
    paths = write(tmp, hand_made())
    assert tables.main(["--records", *paths, "--config", CONFIG, "--out", str(tmp / "t")]) == 0
    return tmp / "t"


def csv(out, name) -> pd.DataFrame:
    return pd.read_csv(out / f"{name}.csv")


def row(df, **keys) -> pd.Series:
    sel = df
    for k, v in keys.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, keys
    return sel.iloc[0]


def test_every_declared_file_is_written(out):
    assert len(tables.table_files()) == len(tables.TABLES) * 3
    for name in tables.table_files():
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "tables_config.json").read_text())["bootstrap"] == 50
    # and nothing else: Snakemake would not know a file it was not told of
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*tables.table_files(), "tables_config.json"]
    )


def test_main_golden(out):
    main = csv(out, "main")
    r = row(main, method="mgsd", puzzle="frozenlake")
    assert (r["n"], r["sr"], r["em"], r["pr"]) == (4, 50.0, 25.0, 43.75)
    mac = row(main, method="mgsd", puzzle="macro")
    assert (mac["sr"], mac["em"], mac["pr"]) == (75.0, 62.5, 71.875)
    sym = row(main, method="symbolic", puzzle="macro")
    assert (sym["sr"], sym["sr_lo"], sym["sr_hi"]) == (100.0, 100.0, 100.0)
    base = row(main, method="base", puzzle="frozenlake")
    assert (base["sr"], base["sr_lo"], base["sr_hi"]) == (0.0, 0.0, 0.0)
    assert list(dict.fromkeys(main["method"])) == ["base", "symbolic", "opd_only", "mgsd"]
    md = (out / "main.md").read_text()
    sym_line = next(line for line in md.splitlines() if line.startswith("| symbolic"))
    # SR, SR (paper parser), EM, PR of 2 puzzles and macro
    assert sym_line.count("100.0 [100.0, 100.0]") == 12
    assert "| base | 0.0 [0.0, 0.0] |" in md
    assert "Note:" not in md
    assert "| frozenlake SR | frozenlake SR (paper parser) | frozenlake EM |" in md


def _two_readings(parser: str) -> list[dict]:
    """frozenlake mgsd: a succeeds under both readings, b and c only under the paper's, d under
    neither; `success` is the reading of `parser`."""
    paper = {"a": True, "b": True, "c": True, "d": False}
    return [
        rec(i, "frozenlake", "mgsd", success=paper[i] if parser == "paper" else i == "a",
            success_strict=i == "a", success_paper=paper[i], parser=parser)
        for i in "abcd"
    ]  # fmt: skip


@pytest.mark.parametrize("parser", ["strict", "paper"])
def test_main_shows_the_other_answer_reading_beside_sr(tmp_path, parser):
    paths = write(tmp_path, {"mgsd/frozenlake/image": _two_readings(parser)})
    assert tables.main(["--records", *paths, "--config", CONFIG, "--out", str(tmp_path)]) == 0
    r = row(csv(tmp_path, "main"), method="mgsd", puzzle="frozenlake")
    assert (r["sr_strict"], r["sr_paper"]) == (25.0, 75.0)
    assert r["sr"] == (75.0 if parser == "paper" else 25.0)
    md = (tmp_path / "main.md").read_text()
    other = "strict" if parser == "paper" else "paper"
    assert f"| frozenlake SR | frozenlake SR ({other} parser) |" in md
    line = next(x for x in md.splitlines() if x.startswith("| mgsd"))
    assert line.startswith(f"| mgsd | {r['sr']:.1f} [") and f"| {r[f'sr_{other}']:.1f} [" in line
    assert f"read each reply with the {'paper' if parser == 'paper' else 'strict'}" in md


def test_main_notes_records_of_two_parsers(tmp_path):
    files = {"mgsd/frozenlake/image": _two_readings("strict")}
    files["opd_only/frozenlake/image"] = [
        {**r, "method": "opd_only"} for r in _two_readings("paper")
    ]
    paths = write(tmp_path, files)
    assert tables.main(["--records", *paths, "--config", CONFIG, "--out", str(tmp_path)]) == 0
    md = (tmp_path / "main.md").read_text()
    assert "Note: the records mix answer parsers (strict, paper)." in md
    assert "SR (paper parser)" in md


def test_per_level(out):
    per = csv(out, "per_level")
    assert row(per, puzzle="frozenlake", level=3, method="mgsd")["sr"] == 100.0
    assert row(per, puzzle="frozenlake", level=4, method="mgsd")["sr"] == 0.0


def test_ablations_deltas_and_missing_note(out):
    ab = csv(out, "ablations")
    assert list(dict.fromkeys(ab["method"])) == ["mgsd", "opd_only"]  # mgsd first: the reference
    assert row(ab, method="opd_only", puzzle="frozenlake")["d_sr"] == -25.0
    assert row(ab, method="opd_only", puzzle="maze")["d_sr"] == -100.0
    assert row(ab, method="opd_only", puzzle="macro")["d_sr"] == -62.5
    assert pd.isna(row(ab, method="mgsd", puzzle="macro")["d_sr"])
    md = (out / "ablations.md").read_text()
    assert (
        "Note: missing (no image records): mgsd_no_plan, mgsd_full_kl, mgsd_teacher_grounded" in md
    )
    assert "-62.5 [" in md


def test_modality_gap(out):
    gap = csv(out, "modality_gap")
    m = row(gap, method="mgsd", puzzle="macro")
    assert (m["sr_image"], m["sr_image_oracle_state"], m["sr_text"]) == (75.0, 100.0, 100.0)
    assert (m["perception_gap"], m["remaining_gap"]) == (25.0, 0.0)
    fl = row(gap, method="mgsd", puzzle="frozenlake")
    assert fl["perception_gap"] == 50.0 and fl["n_image"] == 4
    b = row(gap, method="base", puzzle="macro")
    assert (b["sr_image"], b["sr_text"]) == (25.0, 100.0) and pd.isna(b["perception_gap"])
    assert "Note: base: no image_oracle_state records" in (out / "modality_gap.md").read_text()


def test_errors_and_perception(out):
    e = row(csv(out, "errors"), method="mgsd", puzzle="frozenlake")
    assert (e["failures"], e["perception_errors"], e["planning_errors"]) == (2, 1, 1)
    assert e["perception_share"] == 50.0 and e["planning_rate"] == 25.0
    assert (
        "| mgsd | frozenlake | 4 | 2 (50.0) | 1 (50.0) | 1 (50.0) |"
        in (out / "errors.md").read_text()
    )
    p = row(csv(out, "perception"), method="mgsd", puzzle="frozenlake")
    assert p["state_correct"] == 75.0 and p["field/level"] == 100.0


def test_absent_rows_still_write_every_file_with_a_note(tmp_path):
    files = {k: v for k, v in hand_made().items() if k.startswith("base/") and "text" in k}
    paths = write(tmp_path, files)
    assert tables.main(["--records", *paths, "--config", CONFIG, "--out", str(tmp_path / "t")]) == 0
    for name in tables.table_files():
        assert (tmp_path / "t" / name).stat().st_size > 0, name
    for name in ("per_level", "perception", "errors", "ablations"):
        assert "\nNote: " in (tmp_path / "t" / f"{name}.md").read_text(), name
    assert list(csv(tmp_path / "t", "ablations").columns)[:3] == ["method", "puzzle", "n"]
    main = csv(tmp_path / "t", "main")
    assert set(main["method"]) == {"symbolic"}  # base under text is still the upper bound


def test_cli_names_the_file_and_missing_column(tmp_path, capsys):
    bad = pa.Table.from_pylist([rec("a", "maze", "mgsd")], schema=EVAL_SCHEMA)
    pq.write_table(bad.drop_columns(["progress_rate"]), tmp_path / "bad.parquet")
    rc = tables.main(["--records", str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert rc == 1 and "bad.parquet" in err and "progress_rate" in err
    assert not (tmp_path / "t").exists()


def test_cli_names_a_bad_config_key(tmp_path, capsys):
    paths = write(tmp_path, {"mgsd/maze/image": [rec("m", "maze", "mgsd")]})
    rc = tables.main(["--records", *paths, "--config", '{"bootstraps": 5}', "--out", str(tmp_path)])
    assert rc == 1 and "tables.bootstraps" in capsys.readouterr().err


def test_latex_and_markdown_rendering():
    t = Table(
        "T", "cap", pd.DataFrame(),
        [("", "method"), ("grp", "a_b"), ("grp", "c")],
        [["mgsd_full_kl", "[1, 2]", "–"]], ["something is missing"],
    )  # fmt: skip
    tex = to_latex(t)
    assert r"mgsd\_full\_kl & {[1, 2]} & -- \\" in tex
    assert r"& \multicolumn{2}{c}{grp} \\" in tex and r"\cmidrule(lr){2-3}" in tex
    assert r"method & a\_b & c \\" in tex and "% Note: something is missing." in tex
    md = to_markdown(t)
    assert "| method | grp a_b | grp c |" in md and md.rstrip().endswith(
        "Note: something is missing."
    )


def test_the_workflow_declares_these_tables():
    from mgsd import workflow

    assert workflow.TABLES == tables.TABLES
    assert workflow.REPORT_CONFIGS["tables"] == tables.CONFIG_FILE


def test_premise_table_reads_the_validation_records_and_checks_the_targets(tmp_path):
    """SR per condition of the base model, its perception, and each target met or not."""
    files = {}
    for puzzle, ids in (("frozenlake", "abcd"), ("maze", "mn")):
        files[f"base/{puzzle}/text"] = [rec(i, puzzle, "base", "text", success=True) for i in ids]
        files[f"base/{puzzle}/teacher"] = [
            rec(i, puzzle, "base", "teacher", success=True) for i in ids
        ]
        files[f"base/{puzzle}/image_oracle_state"] = [
            rec(i, puzzle, "base", "image_oracle_state", success=i in "am") for i in ids
        ]
    files["base/frozenlake/image"] = [
        rec(i, "frozenlake", "base", success=i == "a", state_correct=i == "a",
            state_fields=json.dumps({"level": True, "holes": i == "a"}))
        for i in "abcd"
    ]  # fmt: skip
    files["base/maze/image"] = [
        rec(i, "maze", "base", parsed=i == "m", state_correct=False) for i in "mn"
    ]
    premise = write(tmp_path / "p", files)
    other = write(tmp_path / "e", {"mgsd/maze/image": [rec("m", "maze", "mgsd")]})
    argv = ["--records", *other, "--premise", *premise, "--config", CONFIG, "--out"]
    assert tables.main([*argv, str(tmp_path / "t")]) == 0
    p = csv(tmp_path / "t", "premise")
    fl, mac = row(p, puzzle="frozenlake"), row(p, puzzle="macro")
    assert (fl["sr_text"], fl["sr_image"], fl["sr_image_oracle_state"]) == (100.0, 25.0, 25.0)
    assert fl["state_correct"] == 25.0 and mac["sr_image"] == 12.5 and mac["parse_image"] == 75.0
    md = (tmp_path / "t" / "premise.md").read_text()
    assert "holes 25.0" in md and "level 100.0" in md
    assert "target text SR 70-100%: 100.0 (met)" in md
    assert "target image SR 5-25%: 12.5 (met)" in md
    assert "target image parse rate 80-100%: 75.0 (NOT met)" in md
    # without premise records: the table is written with a note
    assert tables.main(["--records", *other, "--config", CONFIG, "--out", str(tmp_path / "u")]) == 0
    assert "no premise records" in (tmp_path / "u" / "premise.md").read_text()


def test_seeds_table_spreads_over_replicates_and_the_rest_use_the_first(tmp_path):
    files = {}
    for k, wins in enumerate(("ab", "a", "abc")):  # SR 50, 25, 75 on frozenlake
        files[f"mgsd{k}/frozenlake/image"] = [
            rec(i, "frozenlake", "mgsd", success=i in wins, replicate=k) for i in "abcd"
        ]
    files["base/frozenlake/image"] = [rec(i, "frozenlake", "base") for i in "abcd"]
    argv = ["--records", *write(tmp_path, files), "--config", CONFIG, "--out", str(tmp_path / "t")]
    assert tables.main(argv) == 0
    seeds = row(csv(tmp_path / "t", "seeds"), method="mgsd")
    assert [seeds[f"sr_seed{k}"] for k in range(3)] == [50.0, 25.0, 75.0]
    half = 4.303 * 25.0 / 3**0.5  # t(0.975, 2) x sd / sqrt(3)
    assert seeds["sr_mean"] == 50.0 and seeds["sr_hi"] == pytest.approx(50.0 + half, abs=1e-2)
    assert row(csv(tmp_path / "t", "main"), method="mgsd", puzzle="frozenlake")["sr"] == 50.0
    assert "base" not in set(csv(tmp_path / "t", "seeds")["method"])


def test_training_table_flags_unhealthy_distillation_runs(tmp_path):
    def log(folder: Path, rows: list[dict]) -> str:
        folder.mkdir(parents=True)
        (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(folder / "train_log.jsonl")

    def step(s, kl, own, dead, parse):
        return {"step": s, "distill/reverse_kl": kl, "distill/student_logprob": own,
                "distill/dead_mass": dead, "distill/parse_rate": parse}  # fmt: skip

    healthy = [step(s, 2.0 - 0.1 * s, -0.5, 1e-5, 0.5 + 0.04 * s) for s in range(1, 11)]
    healthy.append({"step": 10, "val/success": 0.4})
    drifting = [step(s, 2.0, -0.5 - 0.7 * s, 0.1 * s, 0.9 - 0.08 * s) for s in range(1, 11)]
    sft = [{"step": s, "train/loss": 1.0 / s} for s in range(1, 4)]
    sft.append({"step": 3, "val/success": 0.25, "val/student/success": 0.5})
    paths = [
        log(tmp_path / "models" / "mgsd", healthy),
        log(tmp_path / "models" / "opd_only" / "sweep" / "c1", drifting),
        log(tmp_path / "models" / "grounding", sft),
    ]
    records = write(tmp_path, {"base/maze/image": [rec("m", "maze", "base")]})
    argv = ["--records", *records, "--train-logs", *paths, "--config", CONFIG, "--out"]
    assert tables.main([*argv, str(tmp_path / "t")]) == 0
    t = csv(tmp_path / "t", "training")
    good, bad = row(t, model="mgsd"), row(t, model="opd_only/c1")
    assert bool(good["healthy"]) and not bool(bad["healthy"])
    assert good["kl_first"] == pytest.approx(1.7) and good["parse_last"] == pytest.approx(82.0)
    assert bad["dead_mass_max"] == pytest.approx(1.0) and bad["student_logprob_min"] < -7
    assert row(t, model="grounding")["val_student"] == 50.0
    md = (tmp_path / "t" / "training.md").read_text()
    assert "opd_only/c1: dead mass 1, own log-prob -7.50, parse rate fell" in md
    assert "| mgsd | distillation | 10 | KL 1.700 -> 1.200 |" in md and "success 40.0" in md


METHOD_TABLES = ("main", "per_level", "ablations", "modality_gap", "perception", "errors")


def test_external_models_are_marked_rows_of_every_method_table(tmp_path):
    files = hand_made()
    for cond in ("image", "text"):  # qwen: frozenlake a, b right; maze m right
        files[f"qwen/frozenlake/{cond}"] = [
            rec(i, "frozenlake", "qwen", cond, success=i in "ab", external=True) for i in "abcd"
        ]
        files[f"qwen/maze/{cond}"] = [
            rec(i, "maze", "qwen", cond, success=i == "m", external=True) for i in "mn"
        ]
    paths = write(tmp_path, files)
    assert tables.main(["--records", *paths, "--config", CONFIG, "--out", str(tmp_path)]) == 0
    for name in METHOD_TABLES:
        md = (tmp_path / f"{name}.md").read_text()
        assert "| qwen (external) |" in md, name
        assert "(mgsd (external)" not in md and "| mgsd (external)" not in md, name
        assert f"Note: {EXTERNAL_NOTE}." in md, name
        data = csv(tmp_path, name)
        assert set(data.loc[data["external"], "method"]) == {"qwen"}, name
        assert not data.loc[data["method"] != "qwen", "external"].any(), name
        assert "qwen (external)" in (tmp_path / f"{name}.tex").read_text(), name
    main = csv(tmp_path, "main")
    assert list(dict.fromkeys(main["method"])) == ["base", "symbolic", "opd_only", "mgsd", "qwen"]
    assert row(main, method="qwen", puzzle="macro")["sr"] == 50.0
    ab = csv(tmp_path, "ablations")
    assert list(dict.fromkeys(ab["method"])) == ["mgsd", "opd_only", "qwen"]
    assert row(ab, method="qwen", puzzle="frozenlake")["d_sr"] == 0.0  # a, b vs a, b
    assert row(ab, method="qwen", puzzle="maze")["d_sr"] == -50.0
    gap = csv(tmp_path, "modality_gap")
    assert row(gap, method="qwen", puzzle="macro")["sr_text"] == 50.0
    for name in ("seeds", "premise", "training"):  # no method rows of external models there
        assert "qwen" not in (tmp_path / f"{name}.md").read_text(), name
    # without external models there is no mark and no note
    plain = tmp_path / "plain"
    paths = write(plain, hand_made())
    assert tables.main(["--records", *paths, "--config", CONFIG, "--out", str(plain)]) == 0
    assert "external" not in (plain / "main.md").read_text()
