"""Metrics aggregation against numbers computed by hand: means, bootstrap CIs, macro averages,
perception per field, the error decomposition, and the checks of `load_records`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mgsd.data.records import EVAL_SCHEMA, RecordError, write_eval
from mgsd.eval import metrics


def rec(rid, puzzle="frozenlake", method="mgsd", condition="image", level=3, **kw):
    """One evaluation record; unspecified outcomes are a parsed failure with a correct state."""
    fields = kw.pop("state_fields", {"level": True})
    row = {
        "id": rid, "puzzle": puzzle, "level": level, "method": method, "replicate": 0,
        "external": False, "condition": condition,
        "prompt": "p", "reply": "r", "actions": "", "success": False, "exact_match": False,
        "progress_rate": 0.0, "parsed": True, "illegal_kind": "", "parser": "strict",
        "state_parsed": True, "state_correct": True, "state_fields": json.dumps(fields),
        "reply_tokens": 3, "seconds": 0.1,
    }  # fmt: skip
    row.update(kw)
    return {"success_strict": row["success"], "success_paper": row["success"], **row}


def load(tmp_path, rows, name="r.parquet"):
    return metrics.load_records([write_eval(rows, tmp_path / name)])


FOUR = [  # SR 2/4, EM 1/4, PR (1 + .5 + .25 + 0) / 4 = .4375, parsed 3/4, one hole
    rec("a", success=True, exact_match=True, progress_rate=1.0),
    rec("b", success=True, progress_rate=0.5),
    rec("c", progress_rate=0.25, illegal_kind="hole"),
    rec("d", parsed=False),
]


def test_summarize_golden(tmp_path):
    s = metrics.summarize(load(tmp_path, FOUR), ["method", "puzzle"])
    assert len(s) == 1
    r = s.iloc[0]
    assert r["n"] == 4
    assert r["success"] == 0.5 and r["exact_match"] == 0.25 and r["parsed"] == 0.75
    assert r["progress_rate"] == pytest.approx(0.4375)
    assert r["illegal_hole"] == 0.25 and r["illegal_wall"] == 0.0
    assert "success_lo" not in s  # no bootstrap asked


def test_macro_is_unweighted_over_puzzles(tmp_path):
    rows = FOUR + [rec(f"m{i}", puzzle="maze", success=True) for i in range(2)]
    df = load(tmp_path, rows)
    m = metrics.macro(df, ["method"]).iloc[0]
    assert m["success"] == pytest.approx((0.5 + 1.0) / 2)  # pooled would be 4/6
    assert m["n"] == 6 and m["n_puzzles"] == 2
    assert m["exact_match"] == pytest.approx((0.25 + 0.0) / 2)


def test_bootstrap_ci_known_cases():
    assert metrics.bootstrap_ci(np.ones(50), 200, 0.95, 0) == (1.0, 1.0)
    assert metrics.bootstrap_ci(np.zeros(50), 200, 0.95, 0) == (0.0, 0.0)
    half = np.array([0.0, 1.0] * 100)
    lo, hi = metrics.bootstrap_ci(half, 2000, 0.95, 7)
    assert lo < 0.5 < hi
    assert abs((0.5 - lo) - (hi - 0.5)) < 0.015  # symmetric
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 200), abs=0.02)  # normal approx.
    cont = np.random.default_rng(0).random(37)  # continuous values: the seed shows
    assert metrics.bootstrap_ci(cont, 300, 0.9, 7) == metrics.bootstrap_ci(cont, 300, 0.9, 7)
    assert metrics.bootstrap_ci(cont, 300, 0.9, 7) != metrics.bootstrap_ci(cont, 300, 0.9, 8)
    narrow = metrics.bootstrap_ci(half, 2000, 0.5, 7)
    assert lo < narrow[0] < narrow[1] < hi
    assert all(np.isnan(metrics.bootstrap_ci([], 100)))
    with pytest.raises(ValueError, match="confidence"):
        metrics.bootstrap_ci(half, 100, 1.5)


def test_macro_ci_resamples_within_each_puzzle():
    # one puzzle always solved, one never: every stratified replicate averages to exactly .5
    # (resampling the pooled instances would give a wide interval)
    assert metrics.macro_ci([np.ones(10), np.zeros(30)], 500, 0.95, 0) == (0.5, 0.5)
    assert metrics.macro_ci([np.ones(5), np.ones(8)], 100) == (1.0, 1.0)
    lo, hi = metrics.macro_ci([np.array([0.0, 1.0] * 50), np.ones(20)], 1000, 0.95, 0)
    assert lo < 0.75 < hi and hi <= 1.0


def test_summarize_with_bootstrap_bounds(tmp_path):
    rows = [rec(f"s{i}", success=True, exact_match=True, progress_rate=1.0) for i in range(6)]
    rows += [rec(f"f{i}", puzzle="maze") for i in range(4)]
    df = load(tmp_path, rows)
    s = metrics.summarize(df, ["puzzle"], bootstrap=200, seed=3).set_index("puzzle")
    assert (s.loc["frozenlake", "success_lo"], s.loc["frozenlake", "success_hi"]) == (1.0, 1.0)
    assert (s.loc["maze", "success_lo"], s.loc["maze", "success_hi"]) == (0.0, 0.0)
    m = metrics.macro(df, [], bootstrap=200).iloc[0]
    assert (m["success"], m["success_lo"], m["success_hi"]) == (0.5, 0.5, 0.5)


def test_error_decomposition_by_hand(tmp_path):
    rows = [
        rec("ok", success=True),  # solved with the right state: no error
        rec("lucky", success=True, state_correct=False),  # solved, wrong state: no error either
        rec("p1", state_correct=False),  # perception: wrong state
        rec("p2", state_parsed=False, state_correct=False, state_fields={}),  # unreadable
        rec("q1"),  # planning: right state, failed
        rec("q2", parsed=False),  # planning: right state, no answer
    ]
    e = metrics.error_decomposition(load(tmp_path, rows), ["method"]).iloc[0]
    assert (e["n"], e["failures"], e["perception_errors"], e["planning_errors"]) == (6, 4, 2, 2)
    assert e["perception_share"] == 0.5 and e["planning_share"] == 0.5
    assert e["perception_rate"] == pytest.approx(2 / 6)
    none_failed = metrics.error_decomposition(load(tmp_path, rows[:1], "ok.parquet"), [])
    assert none_failed.iloc[0]["failures"] == 0 and np.isnan(none_failed.iloc[0]["planning_share"])


def test_perception_per_field(tmp_path):
    rows = [
        rec("a", state_fields={"level": True, "holes": False}, state_correct=False),
        rec("b", state_fields={"level": True, "holes": True}),
        rec("c", state_fields={}, state_parsed=False, state_correct=False),
        rec("m", puzzle="maze", state_fields={"walls": True}),
    ]
    p = metrics.perception(load(tmp_path, rows), ["puzzle"]).set_index("puzzle")
    assert p.loc["frozenlake", "field/level"] == pytest.approx(2 / 3)  # unstated counts wrong
    assert p.loc["frozenlake", "field/holes"] == pytest.approx(1 / 3)
    assert p.loc["frozenlake", "state_correct"] == pytest.approx(1 / 3)
    assert p.loc["frozenlake", "state_parsed"] == pytest.approx(2 / 3)
    assert np.isnan(p.loc["frozenlake", "field/walls"]) and p.loc["maze", "field/walls"] == 1.0


def test_paired_difference_uses_shared_instances(tmp_path):
    a = load(tmp_path, [rec("x", success=True), rec("y"), rec("z", success=True)], "a.parquet")
    b = load(tmp_path, [rec("x"), rec("y", success=True)], "b.parquet")
    d = metrics.paired_difference(a, b, ["success"]).set_index("id")
    assert d["success"].to_dict() == {"x": 1.0, "y": -1.0}


def test_order_follows_the_configured_method_order(tmp_path):
    rows = [rec(f"{m}-1", method=m) for m in ("mgsd", "zzz_custom", "base", "sft_direct")]
    s = metrics.summarize(load(tmp_path, rows), ["method"])
    assert list(s["method"]) == ["base", "sft_direct", "mgsd", "zzz_custom"]


def test_symbolic_is_base_under_text(tmp_path):
    rows = [rec("i", method="base"), rec("t", method="base", condition="text", success=True)]
    main = metrics.main_records(load(tmp_path, rows))
    pairs = sorted(zip(main["method"], main["success"], strict=True))
    assert pairs == [("base", False), ("symbolic", True)]


def test_both_readings_are_summarized_with_intervals(tmp_path):
    rows = [rec(i, success_strict=i == "a", success_paper=i in "abc") for i in "abcd"]
    s = metrics.summarize(load(tmp_path, rows), ["method"], bootstrap=20).iloc[0]
    assert (s["success_strict"], s["success_paper"]) == (0.25, 0.75)
    assert s["success_paper_lo"] <= 0.75 <= s["success_paper_hi"]


def test_load_records_names_the_file_and_missing_column(tmp_path):
    table = pa.Table.from_pylist([rec("a")], schema=EVAL_SCHEMA).drop_columns(["success"])
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(RecordError, match=r"bad\.parquet.*success"):
        metrics.load_records([tmp_path / "bad.parquet"])


def test_load_records_rejects_empty_duplicate_and_unknown(tmp_path):
    pq.write_table(pa.Table.from_pylist([], schema=EVAL_SCHEMA), tmp_path / "empty.parquet")
    with pytest.raises(RecordError, match=r"empty\.parquet.*empty"):
        metrics.load_records([tmp_path / "empty.parquet"])
    one = write_eval([rec("a")], tmp_path / "one.parquet")
    two = write_eval([rec("a")], tmp_path / "two.parquet")
    with pytest.raises(RecordError, match=r"'a'.*one\.parquet, .*two\.parquet"):
        metrics.load_records([one, two])
    odd = write_eval([rec("a", condition="audio")], tmp_path / "odd.parquet")
    with pytest.raises(RecordError, match=r"odd\.parquet.*'audio'"):
        metrics.load_records([odd])
    lax = write_eval([rec("a", parser="lax")], tmp_path / "lax.parquet")
    with pytest.raises(RecordError, match=r"lax\.parquet.*unknown parser 'lax'"):
        metrics.load_records([lax])
    with pytest.raises(RecordError, match="not found"):
        metrics.load_records([tmp_path / "nope.parquet"])
