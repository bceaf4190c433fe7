"""The Snakemake workflow: lint, dry runs, a real run of the data rules, rerun scoping."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "presets" / "smoke.yaml"


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and proc.returncode:
        raise AssertionError(
            f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from the 'Job stats' table of a dry run."""
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    lines = out[out.index("Job stats:") :].splitlines()[3:]
    jobs = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def overlay(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint")
    assert "Congratulations" in proc.stdout + proc.stderr


def test_dry_run_plans_every_stage(tmp_path):
    jobs = planned_jobs(snakemake(tmp_path, "-n", "all", "--configfile", str(SMOKE)))
    # 3 puzzles x 3 splits; 11 evaluated models (symbolic is the base model given text), and
    # the base model on the validation split (the premise)
    assert jobs == {
        "data_split": 9,
        "scratch_init": 1,
        "symbolic_pretrain": 1,
        "grounding": 1,
        "sft_direct": 1,
        "grounding_sft": 1,
        "distill": 5,
        "rl": 2,
        "evaluate": 11,
        "premise_eval": 1,
        "tables": 1,
        "plots": 1,
        "all": 1,
    }, jobs


def test_the_evaluate_jobs_take_their_conditions_from_the_config_alone(tmp_path):
    proc = snakemake(tmp_path, "-n", "-p", "all", "--configfile", str(SMOKE))
    blocks = job_blocks(proc, "evaluate")
    assert len(blocks) == 11
    for b in blocks:
        command = b[b.index("Shell command:") :]
        assert '"conditions":[' in command and "--conditions" not in command, command


def test_bad_config_fails_before_any_job(tmp_path):
    bad = overlay(tmp_path, "bad.yaml", {"grounding": {"learning_rate": 1e-3}})
    proc = snakemake(tmp_path, "-n", "--configfile", str(SMOKE), str(bad), check=False)
    assert proc.returncode != 0
    assert "unknown key grounding.learning_rate" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_data_rules_run_and_test_seed_change_reruns_only_test_sets(tmp_path):
    snakemake(tmp_path, "data", "--configfile", str(SMOKE))
    data = tmp_path / "results" / "smoke" / "data"
    files = sorted(data.glob("*/*.parquet"))
    assert len(files) == 9, files
    from mgsd.data import records

    hashes = {}
    for f in files:
        rows = records.read_data(f, columns=["state_hash", "split", "puzzle"])
        assert rows, f
        hashes[f] = {r["state_hash"] for r in rows}
    for puzzle in ("frozenlake", "maze", "minibehaviour"):
        train, val, test = (
            hashes[data / puzzle / f"{s}.parquet"] for s in ("train", "val", "test")
        )
        assert not (train & val) and not (train & test) and not (val & test)

    assert planned_jobs(snakemake(tmp_path, "-n", "data", "--configfile", str(SMOKE))) == {}
    new_seed = overlay(tmp_path, "seed.yaml", {"data": {"seeds": {"test": 99}}})
    jobs = planned_jobs(
        snakemake(tmp_path, "-n", "data", "--configfile", str(SMOKE), str(new_seed))
    )
    assert jobs == {"data_split": 3, "data": 1}, jobs


def test_benchmark_test_sets_come_first_and_are_excluded_from_training(tmp_path, benchmarks_dir):
    bench = overlay(
        tmp_path,
        "bench.yaml",
        {
            "data": {
                "benchmarks_dir": str(benchmarks_dir),
                "puzzles": {
                    "frozenlake": {"test_source": "vsp"},
                    "minibehaviour": {"test_source": "vprl"},
                },
            }
        },
    )
    out = snakemake(tmp_path, "-n", "-p", "data", "--configfile", str(SMOKE), str(bench)).stdout
    commands = [line for line in out.splitlines() if "mgsd generate" in line]
    fl_train = next(c for c in commands if "frozenlake --split train" in c)
    assert "frozenlake/test.parquet" in fl_train
    fl_test = next(c for c in commands if "frozenlake --split test" in c)
    assert "--source vsp" in fl_test and "--seed" not in fl_test and "--exclude  --out" in fl_test
    mz_test = next(c for c in commands if "maze --split test" in c)
    assert "maze/train.parquet" in mz_test and "maze/val.parquet" in mz_test


def test_sweeps_and_replicates_plan_candidates_a_choice_and_seeds(tmp_path):
    """Every candidate of a swept stage is trained, one select job keeps the best on validation,
    downstream stages start from the chosen model, and replicates train with its config."""
    over = overlay(
        tmp_path,
        "sweep.yaml",
        {
            "sweep": {"grounding": {"lr": [1e-3, 2e-3]}, "distill": {"lr": [1e-4, 3e-4, 1e-3]}},
            "replicates": {"mgsd": 3, "grpo": 2},
        },
    )
    proc = snakemake(tmp_path, "-n", "-p", "all", "--configfile", str(SMOKE), str(over))
    jobs = planned_jobs(proc)
    assert jobs["grounding_candidate"] == 2 and jobs["grounding_select"] == 1
    # mgsd is tuned; its 4 ablations and 2 replicates train with its chosen settings
    assert jobs["distill_candidate"] == 3 and jobs["distill_select"] == 1
    assert jobs["distill"] == 6 and jobs["rl"] == 3  # + mgsd-seed1, mgsd-seed2; grpo-seed1
    assert jobs["evaluate"] == 14
    assert "grounding" not in jobs and "sft_direct" in jobs
    commands = [  # training jobs exec the trainer: read them without the "exec "
        line.split("Shell command: ", 1)[1].removeprefix("exec ")
        for line in proc.stdout.splitlines()
        if "Shell command: mgsd " in line or "Shell command: exec mgsd " in line
    ]
    seed2 = next(c for c in commands if "distill --method mgsd " in c and "mgsd-seed2/model" in c)
    assert "--config @results/smoke/models/mgsd/config.json" in seed2
    assert "--seed-offset 2" in seed2 and "--init results/smoke/models/grounding/model" in seed2
    rl_seed = next(c for c in commands if "rl --method grpo " in c and "grpo-seed1/model" in c)
    assert "--seed-offset 1" in rl_seed and "--init results/smoke/models/grounding/model" in rl_seed
    rl_base = next(c for c in commands if "rl --method grpo_only " in c)
    assert "--init results/smoke/models/base/model" in rl_base and "--seed-offset 0" in rl_base
    ablation = next(c for c in commands if "distill --method mgsd_no_plan " in c)
    assert "--config @results/smoke/models/mgsd/config.json --seed-offset 0" in ablation
    candidate = next(c for c in commands if "models/mgsd/sweep/c2/model" in c)
    assert '"lr":0.001' in candidate and "--seed-offset 0" in candidate
    pick = next(c for c in commands if c.startswith("mgsd select") and "/grounding/" in c)
    assert "--metric val/student/success" in pick and "--keys lr" in pick
    evaluation = next(c for c in commands if "evaluate" in c and "mgsd-seed1/model" in c)
    assert "--method mgsd --replicate 1" in evaluation


def test_a_benchmarks_path_with_a_space_and_a_quote_reaches_the_job_intact(
    tmp_path, benchmarks_dir
):
    """The path is quoted for the shell, not pasted between hand-written quotes."""
    odd = tmp_path / "bench marks 'x'"
    odd.symlink_to(benchmarks_dir)
    over = overlay(
        tmp_path,
        "odd.yaml",
        {
            "data": {
                "benchmarks_dir": str(odd),
                "puzzles": {"frozenlake": {"test_source": "vsp", "levels": [3]}},
            }
        },
    )
    snakemake(
        tmp_path,
        "results/smoke/data/frozenlake/test.parquet",
        "--configfile",
        str(SMOKE),
        str(over),
    )
    from mgsd.data import records

    rows = records.read_data(
        tmp_path / "results/smoke/data/frozenlake/test.parquet", columns=["source"]
    )
    assert len(rows) == 100 and {r["source"] for r in rows} == {"vsp"}


def test_training_jobs_exec_the_trainer_and_publish_the_log_themselves(tmp_path):
    """A killed job must not leave its trainer running: the rule execs it (no wrapper shell
    left to kill) and the trainer copies the live log to the output itself."""
    proc = snakemake(tmp_path, "-n", "-p", "all", "--configfile", str(SMOKE))
    commands = [
        line.split("Shell command: ", 1)[1]
        for line in proc.stdout.splitlines()
        if "Shell command: " in line
        and any(f" {s} " in line for s in ("train-sft", "distill", "rl"))
    ]
    # base, grounding, sft_direct, grounding_sft, 5 distillations, 2 RL runs
    assert len(commands) == 11
    for c in commands:
        assert c.startswith("exec mgsd ") and "--final-log results/smoke/models/" in c, c
        assert "&&" not in c and " cp " not in c, c


def test_a_missing_input_folder_stops_the_run_before_any_job(tmp_path):
    over = overlay(
        tmp_path,
        "missing.yaml",
        {"data": {"benchmarks_dir": str(tmp_path / "nowhere"),
                  "puzzles": {"frozenlake": {"test_source": "vsp"}}}},
    )  # fmt: skip
    proc = snakemake(tmp_path, "-n", "--configfile", str(SMOKE), str(over), check=False)
    out = proc.stdout + proc.stderr
    assert (
        proc.returncode != 0
        and f"data.benchmarks_dir: {tmp_path / 'nowhere'} is not a folder" in out
    )
    assert "benchmark test sets of frozenlake" in out and not (tmp_path / "results").exists()


def test_command_line_overrides_change_only_the_given_keys(tmp_path):
    """`--config section='{key: value}'` (values as Snakemake hands them: text) changes those keys
    of the jobs' sections and leaves the rest as the config files set it."""
    proc = snakemake(
        tmp_path, "-n", "-p", "all", "--configfile", str(SMOKE),
        "--config", "grounding={steps: 7, train_vision: false}", "distill={kl_baseline: true}",
    )  # fmt: skip
    commands = [line for line in proc.stdout.splitlines() if "Shell command: " in line]
    grounding = next(c for c in commands if "train-sft --stage grounding " in c)
    assert '"steps":7,' in grounding and '"train_vision":false' in grounding
    assert '"batch_size":8,' in grounding and '"eval_every":2,' in grounding  # smoke.yaml's
    mgsd = next(c for c in commands if "distill --method mgsd " in c)
    assert '"kl_baseline":true' in mgsd and '"steps":3,' in mgsd
    sft = next(c for c in commands if "train-sft --stage sft_direct " in c)
    assert '"steps":4,' in sft and '"train_vision":true' in sft


def job_outputs(proc: subprocess.CompletedProcess, rule: str) -> list[str]:
    """The declared outputs of the (first) job of `rule` in a dry run's listing."""
    lines = proc.stdout.splitlines()
    start = lines.index(f"rule {rule}:")
    line = next(x for x in lines[start:] if x.strip().startswith("output: "))
    return line.strip().removeprefix("output: ").split(", ")


def test_every_file_of_the_report_jobs_is_declared(tmp_path):
    """tables and plots write their config beside their outputs: declared, so that Snakemake
    knows every file in those folders (the report modules' tests check they write no other)."""
    from mgsd.report import plots, tables

    proc = snakemake(tmp_path, "-n", "all", "--configfile", str(SMOKE))
    written = {
        "tables": [*tables.table_files(), tables.CONFIG_FILE],
        "plots": [*plots.figure_files(("png", "pdf")), plots.CONFIG_FILE],
    }
    for rule, names in written.items():
        assert sorted(Path(f).name for f in job_outputs(proc, rule)) == sorted(names), rule


def test_an_rl_sweep_tunes_grpo_and_the_others_take_its_choice(tmp_path):
    over = overlay(
        tmp_path,
        "sweep.yaml",
        {
            "sweep": {"rl": {"lr": [1e-4, 1e-5], "kl_weight": [0.0, 0.01]}},
            "replicates": {"grpo": 2},
        },
    )
    proc = snakemake(tmp_path, "-n", "-p", "all", "--configfile", str(SMOKE), str(over))
    jobs = planned_jobs(proc)
    # grpo: 4 candidates and the choice; grpo_only and grpo-seed1 train with it
    assert jobs["rl_candidate"] == 4 and jobs["rl_select"] == 1 and jobs["rl"] == 2, jobs
    commands = [
        line.split("Shell command: ", 1)[1].removeprefix("exec ")
        for line in proc.stdout.splitlines()
        if "Shell command: mgsd " in line or "Shell command: exec mgsd " in line
    ]
    chosen = "--config @results/smoke/models/grpo/config.json"
    rl_base = next(c for c in commands if "rl --method grpo_only " in c)
    assert chosen in rl_base and "--init results/smoke/models/base/model" in rl_base
    seed1 = next(c for c in commands if "rl --method grpo " in c and "grpo-seed1/model" in c)
    assert chosen in seed1 and "--seed-offset 1" in seed1
    last = next(c for c in commands if "models/grpo/sweep/c3/model" in c)
    assert '"lr":1e-05' in last and '"kl_weight":0.01' in last and chosen not in last
    pick = next(c for c in commands if c.startswith("mgsd select") and "/grpo " in c + " ")
    assert "--metric val/success" in pick and "--keys kl_weight lr" in pick


def test_list_rules_explains_every_rule(tmp_path):
    over = overlay(tmp_path, "sweep.yaml", {"sweep": {"grounding": {"lr": [1e-3, 2e-3]},
                                                      "distill": {"lr": [1e-4, 3e-4]}}})  # fmt: skip
    proc = snakemake(tmp_path, "--list-rules", "--configfile", str(SMOKE), str(over))
    rules = [line for line in proc.stdout.splitlines() if line and not line.startswith("Config")]
    assert len(rules) == 19, rules  # every rule, the sweep's candidate and select rules too
    for line in rules:
        name, _, doc = line.partition(" (")
        assert len(doc) > 30 and doc.endswith(".)"), line


def test_rule_docstrings_are_plain_strings():
    """Python 3.12 tokenizes f-strings into parts (PEP 701), and Snakemake's parser then reads an
    f-string docstring as a syntax error: the workflow would load on 3.11 and fail on 3.12."""
    files = [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk"))]
    rule = re.compile(r"^\s*(?:rule|checkpoint)\b[^\n]*:\n\s*([A-Za-z]{0,2})(\"|')", re.M)
    checked = 0
    for path in files:
        for m in rule.finditer(path.read_text()):
            checked += 1
            assert "f" not in m.group(1).lower(), f"{path.name}: f-string docstring {m.group(0)!r}"
    assert checked >= 10, checked  # the pattern does find the rules


# ---------------------------------------------------------------- external models

HUB_ID = "Qwen/Qwen3-VL-4B-Instruct"


def job_blocks(proc: subprocess.CompletedProcess, rule: str) -> list[str]:
    """The printed blocks (`-n -p`) of every planned job of `rule`."""
    out = proc.stdout + proc.stderr
    return [b for b in out.split("\nrule ")[1:] if b.startswith(f"{rule}:")]


def test_external_models_get_one_gpu_evaluation_job_per_condition(tmp_path):
    model = tmp_path / "elsewhere" / "my_vlm"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    ext = overlay(
        tmp_path,
        "ext.yaml",
        {
            "external_models": {
                "qwen": {"path": HUB_ID, "conditions": ["image", "text"]},
                "mine": {"path": str(model)},  # the evaluate section's 3 conditions
            },
            "resources": {"evaluate": {"gpus": 1, "cpus_per_gpu": 2}},
        },
    )
    proc = snakemake(tmp_path, "-n", "-p", "all", "--configfile", str(SMOKE), str(ext))
    assert planned_jobs(proc)["evaluate_external"] == 5
    assert planned_jobs(proc)["evaluate"] == 11  # as without external models
    blocks = job_blocks(proc, "evaluate_external")
    assert len(blocks) == 5
    seen = set()
    for b in blocks:
        name, cond = re.search(r"wildcards: external=(\w+), condition=(\w+)", b).groups()
        seen.add((name, cond))
        assert "gpu=1" in b and "cpus_per_gpu=2" in b, b  # the resources of `evaluate`
        command = b[b.index("Shell command:") :]
        assert f"--method {name} --external" in command and f"--conditions {cond} " in command
        if name == "qwen":
            assert f"--model {HUB_ID} " in command and "--prompt-style instruct" in command
        else:
            assert f"--model {model} " in command and f"input: {model}," in b
        assert f"results/smoke/eval/{name}/maze/{cond}.parquet" in b
    assert seen == {("qwen", "image"), ("qwen", "text")} | {
        ("mine", c) for c in ("image", "text", "image_oracle_state")
    }
    # the reports read every external record
    (tables,) = job_blocks(proc, "tables")
    assert "results/smoke/eval/qwen/frozenlake/text.parquet" in tables
    assert "results/smoke/eval/mine/minibehaviour/image_oracle_state.parquet" in tables


@pytest.mark.parametrize(
    ("external", "message"),
    [
        ({"mgsd": {"path": HUB_ID}}, "external_models.mgsd: the name 'mgsd' clashes with the "
         "method 'mgsd'"),
        ({"base": {"path": HUB_ID}}, "external_models.base: the name 'base' clashes"),
        ({"mine": {"path": "{tmp}/no/such/model"}}, "external_models.mine.path: {tmp}/no/such/model "
         "does not exist"),
        ({"mine": {"path": "{tmp}"}}, "external_models.mine.path: {tmp} has no config.json"),
        ({"mine": {"path": HUB_ID, "prompt_style": "compact"}}, "external_models.mine.prompt_style"),
    ],
    ids=["clash-method", "clash-base", "missing-path", "not-a-model", "compact-hub-model"],
)  # fmt: skip
def test_a_bad_external_model_stops_the_run_before_any_job(tmp_path, external, message):
    external = yaml.safe_load(yaml.safe_dump(external).replace("{tmp}", str(tmp_path)))
    ext = overlay(tmp_path, "ext.yaml", {"external_models": external})
    proc = snakemake(tmp_path, "-n", "all", "--configfile", str(SMOKE), str(ext), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "invalid configuration" in out
    assert message.replace("{tmp}", str(tmp_path)) in out, out[-2000:]
    assert not (tmp_path / "results").exists() and "Job stats" not in out


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here"
)
def test_a_run_needing_torchvision_stops_before_any_job_without_it(tmp_path):
    """A hub model's processor needs torchvision: a run (not a dry run, which only plans) stops
    before its first job, naming the model's key, instead of failing inside a queued GPU job."""
    over = overlay(tmp_path, "hub.yaml", {"external_models": {"qwen": {"path": HUB_ID}}})
    assert snakemake(tmp_path, "-n", "--configfile", str(SMOKE), str(over)).returncode == 0
    proc = snakemake(tmp_path, "all", "--configfile", str(SMOKE), str(over), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert f"external_models.qwen.path: {HUB_ID} loads a pretrained processor" in out
    assert "needs torchvision" in out and not (tmp_path / "results").exists()
