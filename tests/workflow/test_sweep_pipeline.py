"""Settings chosen on validation and replicated seeds, run for real on the smoke preset.

A sweep trains every candidate of a stage, keeps the best one on validation (`mgsd select`),
the next stage starts from it, and the replicates of a swept distillation method train with the
chosen settings and their own seed; evaluation and tables see each seed.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_workflow import SMOKE, overlay, snakemake  # same folder

pytestmark = pytest.mark.slow

SWEEP = {
    "run": "sweep",
    "methods": ["base", "symbolic", "grounding", "opd_only", "mgsd", "grpo_only", "grpo"],
    "sweep": {
        "grounding": {"lr": [1e-3, 2e-3]},
        "distill": {"lr": [1e-4, 3e-4]},
        "rl": {"lr": [1e-4, 3e-4]},
    },
    "replicates": {"mgsd": 2, "grpo": 2},
}


def test_sweep_selects_on_validation_and_replicates_train_with_the_choice(tmp_path):
    over = overlay(tmp_path, "sweep.yaml", SWEEP)
    snakemake(tmp_path, "all", "--configfile", str(SMOKE), str(over))
    root = tmp_path / "results" / "sweep"
    for method, lrs in (
        ("grounding", [1e-3, 2e-3]),
        ("mgsd", [1e-4, 3e-4]),
        ("grpo", [1e-4, 3e-4]),
    ):
        sweep = json.loads((root / "models" / method / "sweep.json").read_text())
        assert [c["settings"]["lr"] for c in sweep["candidates"]] == lrs
        scores = [c["score"] for c in sweep["candidates"]]
        best = scores.index(max(scores))  # the first of the best
        assert sweep["chosen"] == f"c{best}"
        chosen = root / "models" / method / "sweep" / f"c{best}" / "model"
        kept = root / "models" / method / "model"
        assert (kept / "model.safetensors").read_bytes() == (
            chosen / "model.safetensors"
        ).read_bytes()
        stage = json.loads((kept / "mgsd_stage.json").read_text())
        assert stage["config"]["lr"] == lrs[best]
    # stage 2 starts from the chosen grounding model
    mgsd_c0 = json.loads((root / "models/mgsd/sweep/c0/model/mgsd_stage.json").read_text())
    assert mgsd_c0["init"] == "results/sweep/models/grounding/model"
    # the replicate: mgsd's chosen settings, the next seed; the ablation: the same settings
    chosen = json.loads((root / "models" / "mgsd" / "config.json").read_text())
    replicate = json.loads((root / "models/mgsd-seed1/model/mgsd_stage.json").read_text())
    assert replicate["config"] == {**chosen, "seed": chosen["seed"] + 1}
    ablation = json.loads((root / "models/opd_only/model/mgsd_stage.json").read_text())
    assert ablation["config"] == chosen and not (root / "models/opd_only/sweep.json").exists()
    # RL likewise: grpo is tuned, grpo_only and grpo's replicate take its choice
    chosen = json.loads((root / "models" / "grpo" / "config.json").read_text())
    replicate = json.loads((root / "models/grpo-seed1/model/mgsd_stage.json").read_text())
    assert replicate["config"] == {**chosen, "seed": chosen["seed"] + 1}
    assert replicate["init"] == "results/sweep/models/grounding/model"
    from_base = json.loads((root / "models/grpo_only/model/mgsd_stage.json").read_text())
    assert from_base["config"] == chosen and from_base["init"] == "results/sweep/models/base/model"
    records = pd.read_parquet(root / "eval" / "mgsd-seed1" / "maze" / "image.parquet")
    assert set(records["method"]) == {"mgsd"} and set(records["replicate"]) == {1}
    seeds = pd.read_csv(root / "tables" / "seeds.csv")
    assert list(seeds["method"]) == ["mgsd", "grpo"] and seeds["seeds"].tolist() == [2, 2]
    main = pd.read_csv(root / "tables" / "main.csv")  # the first seed only
    assert main.groupby(["method", "puzzle"]).size().max() == 1
