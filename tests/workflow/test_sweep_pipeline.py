"""Settings chosen on validation and replicated seeds, run for real on the smoke preset.

A sweep trains every candidate of a stage, keeps the best one on validation (`mgsd select`),
the next stage starts from it, and the replicates of a swept distillation method train with the
chosen settings and their own seed; evaluation and tables see each seed.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from test_workflow import REPO, SMOKE, overlay, planned_jobs, snakemake  # same folder

from mgsd import equal_time

pytestmark = pytest.mark.slow

SWEEP = {
    "run": "sweep",
    "methods": ["base", "symbolic", "grounding", "opd_only", "mgsd", "grpo_only", "grpo"],
    "sweep": {
        "grounding": {"lr": [1e-3, 2e-3]},
        "distill": {"lr": [1e-4, 3e-4]},
        "rl": {"lr": [2e-4, 3e-4]},  # neither is the preset's lr: a lost choice shows
    },
    "replicates": {"mgsd": 2, "grpo": 2},
}


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """The smoke preset with sweeps and seeds, run to the end: (working dir, config files)."""
    workdir = tmp_path_factory.mktemp("sweep")
    over = overlay(workdir, "sweep.yaml", SWEEP)
    snakemake(workdir, "all", "--configfile", str(SMOKE), str(over))
    return workdir, [str(REPO / "pipeline_config.yaml"), str(SMOKE), str(over)]


def test_sweep_selects_on_validation_and_replicates_train_with_the_choice(sweep_run):
    tmp_path, _ = sweep_run
    root = tmp_path / "results" / "sweep"
    for method, lrs in (
        ("grounding", [1e-3, 2e-3]),
        ("mgsd", [1e-4, 3e-4]),
        ("grpo", [2e-4, 3e-4]),
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


def _seconds_per_step(log):
    timed = [r for r in map(json.loads, log.read_text().splitlines()) if "perf/sample_s" in r]
    return (timed[-1]["time"] - timed[0]["time"]) / (timed[-1]["step"] - timed[0]["step"])


def test_equal_time_run_trains_only_the_rl_methods_with_the_steps_of_mgsds_time(sweep_run, capsys):
    workdir, files = sweep_run
    root, root2 = workdir / "results" / "sweep", workdir / "results" / "sweep_equal_time"
    assert equal_time.main([*files, "--dir", str(workdir)]) == 0
    assert "rl.steps =" in capsys.readouterr().out
    measured = json.loads((root2 / "equal_time.json").read_text())
    mgsd_s = [
        _seconds_per_step(root / "models" / m / "train_log.jsonl") for m in ("mgsd", "mgsd-seed1")
    ]
    grpo_s = _seconds_per_step(root / "models" / "grpo" / "train_log.jsonl")
    assert measured["mgsd_seconds_per_step"] == pytest.approx(
        {"mgsd": mgsd_s[0], "mgsd-seed1": mgsd_s[1]}
    )
    steps = round(3 * (mgsd_s[0] + mgsd_s[1]) / 2 / grpo_s)  # smoke: 3 distillation steps
    assert measured["steps"] == max(1, steps)
    # the compared methods are the first run's files, up to date: only grpo (2 seeds) and
    # grpo_only train
    config = ["--configfile", str(root2 / "equal_time.yaml")]
    jobs = planned_jobs(snakemake(workdir, "-n", "all", *config))
    assert jobs == {"rl": 3, "evaluate": 3, "tables": 1, "plots": 1, "all": 1}
    same = root / "models/mgsd-seed1/model/model.safetensors"
    assert os.path.samefile(same, root2 / "models/mgsd-seed1/model/model.safetensors")
    snakemake(workdir, "all", *config)
    chosen = json.loads((root / "models" / "grpo" / "config.json").read_text())
    for name, seed, init in (
        ("grpo", 0, "grounding"), ("grpo-seed1", 1, "grounding"), ("grpo_only", 0, "base")
    ):  # fmt: skip
        stage = json.loads((root2 / "models" / name / "model" / "mgsd_stage.json").read_text())
        want = {**chosen, "steps": measured["steps"], "seed": chosen["seed"] + seed}
        assert stage["config"] == want
        assert stage["init"] == f"results/sweep_equal_time/models/{init}/model"
    ablations = pd.read_csv(root2 / "tables" / "ablations.csv")
    rl = ablations[
        ablations["method"].isin(["grpo", "grpo_only"]) & (ablations["puzzle"] == "macro")
    ]
    assert len(rl) == 2 and rl["d_sr"].notna().all()  # paired with mgsd
    # a second call leaves the prepared run alone
    assert equal_time.main([*files, "--dir", str(workdir)]) == 1
    assert "exists" in capsys.readouterr().err
