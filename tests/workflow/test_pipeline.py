"""The whole smoke pipeline end to end, then rerun scoping on the complete tree.

One real run per test session (a module fixture): data, every model, every evaluation,
tables, figures and the HTML report, plus two external models (a scratch model saved to a
folder, evaluated as given under two prompt styles). The scoping tests then change one config
section at a time and read the jobs a dry run plans on that complete tree: each stage must rerun
exactly when a section it reads changes (rules get only their own section,
`mgsd.config.section_json`), and changing one external model reruns only its evaluations.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from test_workflow import REPO, SMOKE, overlay, planned_jobs, snakemake  # same folder

from mgsd.config import Config, load_file
from mgsd.workflow import (
    DISTILL_SETUPS,
    RL_INITS,
    eval_files,
    evaluated_models,
    report_files,
    train_logs,
)

pytestmark = pytest.mark.slow

# The smoke preset is the CI run of every stage: at most 5 minutes on a free 2-core machine,
# and at most 5 minutes of CPU (its jobs run one torch thread each: Snakemake sets
# OMP_NUM_THREADS to the job's threads).
PIPELINE_BUDGET_S = 300
CORES = 2
CFG = load_file(REPO / "pipeline_config.yaml", SMOKE)
EVAL_JOBS = len(evaluated_models(CFG))  # one per trained model
DISTILL_JOBS = sum(m in CFG.methods for m in DISTILL_SETUPS)
RL_JOBS = sum(m in CFG.methods for m in RL_INITS)
REPORTS = {"tables": 1, "plots": 1, "all": 1}
# two external models, the same random scratch folder under each prompt style: 3 jobs in all
EXTERNAL = {
    "ext_instruct": {"prompt_style": "instruct", "conditions": ["image", "text"]},
    "ext_compact": {"prompt_style": "compact", "conditions": ["image"]},
}
EXTERNAL_JOBS = sum(len(e["conditions"]) for e in EXTERNAL.values())


@dataclass(frozen=True)
class Tree:
    """A working folder holding the complete smoke run, and what the run cost."""

    workdir: Path
    external: Path  # the overlay naming the external models
    cfg: Config  # the configuration of the run, external models included
    wall_s: float
    cpu_s: float  # user + system time of every finished process the run started
    load: float  # mean number of runnable processes on the machine during the run


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Tree:
    from mgsd.model.scratch import build_scratch

    workdir = tmp_path_factory.mktemp("smoke")
    folder = build_scratch(CFG.backbone.scratch, CFG.data.image_size, workdir / "elsewhere" / "vlm")
    external = {name: {"path": str(folder), **e} for name, e in EXTERNAL.items()}
    ext = overlay(workdir, "external.yaml", {"external_models": external})
    t0, cpu0 = time.perf_counter(), children_cpu_s()
    snakemake(workdir, "all", "--configfile", str(SMOKE), str(ext))
    wall, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    load = os.getloadavg()[1 if wall > 150 else 0]  # the 5- or the 1-minute average
    cfg = load_file(REPO / "pipeline_config.yaml", SMOKE, ext)
    return Tree(workdir, ext, cfg, wall, cpu, load)


def dry_run(tree: Tree, tmp_path: Path, change: dict | None = None) -> dict[str, int]:
    configs = [str(SMOKE), str(tree.external)]
    configs += [str(overlay(tmp_path, "change.yaml", change))] if change else []
    return planned_jobs(snakemake(tree.workdir, "-n", "all", "--configfile", *configs))


def test_smoke_pipeline_writes_every_artifact_in_budget(tree):
    print(
        f"\nsmoke pipeline: {tree.wall_s:.0f} s wall, {tree.cpu_s:.0f} s CPU, load {tree.load:.1f}"
    )
    missing, empty = [], []
    for f in report_files(tree.cfg) + eval_files(tree.cfg) + train_logs(tree.cfg):
        path = tree.workdir / f
        if not path.is_file():
            missing.append(f)
        elif not path.stat().st_size:
            empty.append(f)
    assert not missing and not empty, f"missing: {missing}\nempty: {empty}"
    assert len(eval_files(tree.cfg)) > len(eval_files(CFG))  # the external models' records
    for f in eval_files(tree.cfg):
        assert (tree.workdir / f).with_suffix(".json").stat().st_size, f
    assert tree.cpu_s <= PIPELINE_BUDGET_S, f"smoke pipeline used {tree.cpu_s:.0f} s of CPU"
    # on a machine shared with other work (load above the cores), wall time stretches with it
    allowed = PIPELINE_BUDGET_S * max(1.0, tree.load / CORES)
    assert tree.wall_s <= allowed, f"smoke pipeline took {tree.wall_s:.0f} s (load {tree.load})"


def test_report_is_written(tree):
    report = tree.workdir / CFG.root / "report.html"
    snakemake(tree.workdir, "--report", str(report), "--configfile", str(SMOKE), str(tree.external))
    text = report.read_text(errors="replace")
    assert report.stat().st_size > 10_000 and "<html" in text.lower()
    missing = [f for f in report_files(CFG) if Path(f).name not in text]
    assert not missing, f"not in the report: {missing}"


def test_complete_tree_plans_nothing(tree, tmp_path):
    t0 = time.perf_counter()
    jobs = dry_run(tree, tmp_path)
    print(f"\nsnakemake -n on the complete tree: {time.perf_counter() - t0:.1f} s")
    assert jobs == {}


@pytest.mark.parametrize(
    "change, want",
    [
        pytest.param(
            {"evaluate": {"max_new_tokens": 65}},
            {
                "evaluate": EVAL_JOBS,
                "evaluate_external": EXTERNAL_JOBS,
                "premise_eval": 1,
                **REPORTS,
            },
            id="evaluate-option",
        ),  # fmt: skip
        pytest.param({"plots": {"dpi": 81}}, {"plots": 1, "all": 1}, id="plots-option"),
        pytest.param({"tables": {"bootstrap": 201}}, {"tables": 1, "all": 1}, id="tables-option"),
        pytest.param(
            {"data": {"seeds": {"test": 99}}},
            {
                "data_split": len(CFG.data.puzzles),
                "evaluate": EVAL_JOBS,
                "evaluate_external": EXTERNAL_JOBS,
                **REPORTS,
            },
            id="test-seed",
        ),  # fmt: skip
        pytest.param(
            {"distill": {"lr": 1e-3}},
            {"distill": DISTILL_JOBS, "evaluate": DISTILL_JOBS, **REPORTS},
            id="distill-option",
        ),
        pytest.param(
            {"rl": {"illegal_penalty": 0.25}},
            {"rl": RL_JOBS, "evaluate": RL_JOBS, **REPORTS},
            id="rl-option",
        ),
        pytest.param(
            {"external_models": {"ext_compact": {"prompt_style": "instruct"}}},
            {"evaluate_external": 1, **REPORTS},
            id="one-external-model",
        ),
        pytest.param(
            {"external_models": {"ext_compact": {"conditions": ["image", "text"]}}},
            {"evaluate_external": 1, **REPORTS},
            id="external-condition-added",
        ),
        pytest.param(
            {"external_models": {"ext_instruct": {"conditions": ["image"]}}},
            REPORTS,
            id="external-condition-dropped",
        ),
    ],
)
def test_a_config_change_reruns_only_the_stages_that_read_it(tree, tmp_path, change, want):
    assert dry_run(tree, tmp_path, change) == want


def test_external_models_land_in_the_tables_marked_external(tree):
    tables = tree.workdir / tree.cfg.root / "tables"
    main = pd.read_csv(tables / "main.csv")
    assert set(main.loc[main["external"], "method"]) == set(EXTERNAL)
    assert set(main.loc[~main["external"], "method"]) >= {"base", "symbolic", "mgsd"}
    mine = main[main["method"] == "ext_instruct"]
    assert set(mine["puzzle"]) == {*CFG.data.puzzles, "macro"}
    assert mine["n"].sum() == 2 * sum(
        len(CFG.data.puzzles[p].levels) * CFG.data.puzzles[p].test_per_level
        for p in CFG.data.puzzles
    )  # every test instance of every puzzle, and as many in the macro row
    assert {"sr", "sr_paper", "sr_strict", "parse"} <= set(main.columns)
    md = (tables / "main.md").read_text()
    assert "| ext_instruct (external) |" in md and "| ext_compact (external) |" in md
    gap = pd.read_csv(tables / "modality_gap.csv")
    text = gap[(gap["method"] == "ext_instruct") & (gap["puzzle"] == "macro")]
    assert text["n_text"].notna().all()  # its text condition was evaluated
    for name in ("per_level", "ablations", "perception", "errors"):
        assert "ext_compact (external)" in (tables / f"{name}.md").read_text(), name
    folder = tree.workdir / tree.cfg.root / "eval" / "ext_instruct" / "maze"
    records = pd.concat([pd.read_parquet(f) for f in sorted(folder.glob("*.parquet"))])
    assert set(records["condition"]) == {"image", "text"}
    assert records["external"].all() and (records["parser"] == "strict").all()
    prompts = " ".join(records["prompt"])
    assert "Reply format: first write the state" in prompts  # the long (instruct) prompt
