"""The configuration is validated before any job runs, with errors that name the key."""

from pathlib import Path

import pytest
import yaml

from mgsd import config as C

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "pipeline_config.yaml"


def _raw(**over):
    return C.merge(yaml.safe_load(DEFAULT.read_text()), over)


@pytest.mark.parametrize("preset", sorted((REPO / "presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_default_and_presets_load(preset):
    cfg = C.load_file(DEFAULT, preset)
    assert cfg.run and cfg.data.puzzles


def test_default_loads_with_every_method():
    cfg = C.load_file(DEFAULT)
    assert set(cfg.methods) == set(C.METHODS)
    assert cfg.root == Path("results") / "default"


@pytest.mark.parametrize(
    "over, message",
    [
        ({"grounding": {"lrr": 1}}, "unknown key grounding.lrr"),
        ({"data": {"puzzles": {"maze": {"levelz": [3]}}}}, "unknown key data.puzzles.maze.levelz"),
        ({"data": {"puzzles": {"sokoban": {"levels": [3]}}}}, "data.puzzles.sokoban"),
        ({"grounding": {"lr": "fast"}}, "grounding.lr: expected a number"),
        ({"distill": {"steps": 2.5}}, "distill.steps: expected an integer"),
        ({"evaluate": {"batch_size": 0}}, "evaluate.batch_size: 0 is below the minimum 1"),
        ({"evaluate": {"offgrid": "wrap"}}, "evaluate.offgrid"),
        ({"sft_direct": {"finetune": "half"}}, "sft_direct.finetune"),
        ({"methods": ["mgsd", "magic"]}, "methods: unknown method 'magic'"),
        ({"evaluate": {"conditions": ["image", "audio"]}}, "unknown condition 'audio'"),
        ({"data": {"puzzles": {"maze": {"levels": [40]}}}}, "data.puzzles.maze.levels: side 40"),
        ({"data": {"puzzles": {"maze": {"test_source": "vsp"}}}}, "data.puzzles.maze.test_source"),
        (
            {"data": {"puzzles": {"frozenlake": {"test_source": "vsp"}}}},
            "needs data.benchmarks_dir",
        ),
        ({"data": {"puzzles": {"frozenlake": {"hole_fraction": [0.3, 0.1]}}}}, "hole_fraction"),
        ({"resources": {"trainn": {"gpus": 1}}}, "unknown key resources.trainn"),
        ({"grounding": {"batch_size": 10, "grad_accum": 3}}, "grounding.grad_accum"),
        ({"run": "a/b"}, "run:"),
    ],
)
def test_bad_values_name_the_key(over, message):
    with pytest.raises(C.ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        C.load(_raw(**over))


def test_missing_key_is_named():
    raw = _raw()
    del raw["distill"]["lr"]
    with pytest.raises(C.ConfigError, match="missing key distill.lr"):
        C.load(raw)


@pytest.mark.parametrize(
    "scratch, field",
    [
        ({"mrope_section": [4, 4, 4]}, "mrope_section"),
        ({"deepstack_visual_indexes": [5]}, "deepstack_visual_indexes"),
        ({"num_position_embeddings": 15}, "num_position_embeddings"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
        ({"vision_num_heads": 3}, "vision_num_heads"),
    ],
)
def test_scratch_traps_name_the_field(scratch, field):
    with pytest.raises(C.ConfigError, match=f"backbone.scratch.{field}"):
        C.load(_raw(backbone={"scratch": scratch}))


def test_sections_round_trip_through_json():
    cfg = C.load_file(DEFAULT)
    for name, cls in [
        ("grounding", C.TrainConfig),
        ("distill", C.DistillConfig),
        ("evaluate", C.EvaluateConfig),
        ("tables", C.TablesConfig),
    ]:
        section = getattr(cfg, name)
        assert C.load_section(cls, C.section_json(section), name) == section


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(C.ConfigError, match="cannot read config file"):
        C.load_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load_file(bad)


# ---------------------------------------------------------------- mixes, sweeps, replicates


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"grounding": {"mix": {"reading": {"weight": 1}}}}, "unknown key grounding.mix.reading"),
        (
            {
                "grounding": {
                    "mix": {
                        "symbolic": {"weight": 0},
                        "oracle": {"weight": 0},
                        "grounding_student": {"weight": 0},
                    }
                }
            },
            "grounding.mix: give at least one task a weight above 0",
        ),  # fmt: skip
        ({"grounding": {"mix": {"oracle": {"weight": -1}}}}, "grounding.mix.oracle.weight"),
        ({"sweep": {"distill": {"lrr": [1e-4]}}}, "unknown key sweep.distill.lrr"),
        ({"sweep": {"distill": {"lr": [0.0]}}}, "sweep.distill.lr: 0.0 must be greater than 0"),
        ({"sweep": {"distill": {"lr": []}}}, "sweep.distill.lr: give at least one value"),
        ({"sweep": {"evaluate": {"batch_size": [1]}}}, "unknown key sweep.evaluate"),
        ({"replicates": {"grounding": 2}}, "unknown key replicates.grounding"),
        ({"replicates": {"mgsd": 0}}, "replicates.mgsd: 0 is below the minimum 1"),
        ({"methods": ["base", "grounding_sft"], "grounding_sft": None}, "grounding_sft section"),
        ({"sweep": {"rl": {"samples_per_prompt": [1]}}}, "sweep.rl.samples_per_prompt: 1 is below"),
        (
            {"methods": ["base", "grpo_only"], "sweep": {"rl": {"lr": [1e-5]}}},
            "add grpo to methods",
        ),
        ({"methods": ["base", "grpo"], "rl": None}, "methods: grpo needs an rl section"),
        ({"rl": {"samples_per_prompt": 1}}, "rl.samples_per_prompt: 1 is below the minimum 2"),
    ],
)
def test_mix_sweep_and_replicate_errors_name_the_key(over, message):
    with pytest.raises(C.ConfigError, match=message):
        C.load(_raw(**over))


def test_a_null_mix_clears_the_mix_it_overlays():
    assert C.load(_raw()).grounding.mix  # the default preset replays text planning
    assert C.load(_raw(grounding={"mix": None})).grounding.mix is None


def test_sweep_candidates_are_the_grid_in_order():
    cfg = C.load(_raw(sweep={"distill": {"lr": [1e-4, 3e-4], "kl_baseline": [False, True]}}))
    grid = C.sweep_candidates(cfg, "distill")
    assert grid == [
        {"lr": 1e-4, "kl_baseline": False}, {"lr": 1e-4, "kl_baseline": True},
        {"lr": 3e-4, "kl_baseline": False}, {"lr": 3e-4, "kl_baseline": True},
    ]  # fmt: skip
    assert C.sweep_candidates(cfg, "grounding") == [{}]
    section = C.swept_section(cfg.distill, grid[3])
    assert section.lr == 3e-4 and section.kl_baseline and section.steps == cfg.distill.steps


def test_numbers_written_as_text_are_read_and_non_finite_ones_rejected():
    """YAML 1.1 reads `lr: 1e-3` as the string '1e-3': it is the usual way to write a rate."""
    cfg = C.load(_raw(grounding={"lr": "1e-3", "steps": "40"}))
    assert cfg.grounding.lr == 1e-3 and cfg.grounding.steps == 40
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"  # what the YAML loader hands over
    for bad, message in (("fast", "expected a number, got 'fast'"), (float("nan"), "not a finite"),
                         (float("inf"), "not a finite"), ("1e400", "not a finite")):  # fmt: skip
        with pytest.raises(C.ConfigError, match=f"grounding.lr: .*{message}"):
            C.load(_raw(grounding={"lr": bad}))
    with pytest.raises(C.ConfigError, match="grounding.steps: expected an integer, got '4.5'"):
        C.load(_raw(grounding={"steps": "4.5"}))


SMOKE = REPO / "presets" / "smoke.yaml"


def test_command_line_overrides_change_only_the_given_keys():
    """`snakemake --config KEY=VALUE` hands each VALUE over as YAML's base loader reads it: every
    scalar as text ('100', 'false', 'null'); they are read as YAML and merged into the files."""
    from snakemake.cli import parse_config

    cli = parse_config(
        [
            "grounding={steps: 100, train_vision: false}",
            'distill={"lr": 1e-4, "kl_baseline": true}',
            "data={benchmarks_dir: null, puzzles: {maze: {levels: [3, 4]}}}",
            "methods=[base, sft_direct]",
        ]
    )
    assert cli["grounding"] == {"steps": "100", "train_vision": "false"}  # what Snakemake hands
    files = C.load_file(DEFAULT, SMOKE)
    cfg = C.load_file(DEFAULT, SMOKE, overrides=cli)
    assert cfg.grounding.steps == 100 and cfg.grounding.train_vision is False
    assert cfg.grounding.lr == files.grounding.lr and cfg.grounding.batch_size == 8  # the files'
    assert cfg.distill.lr == 1e-4 and cfg.distill.kl_baseline is True
    assert cfg.distill.steps == files.distill.steps
    assert cfg.data.benchmarks_dir is None and cfg.data.puzzles["maze"].levels == (3, 4)
    assert cfg.data.puzzles["maze"].train_per_level == 48
    assert cfg.methods == ("base", "sft_direct")


def test_a_whole_section_given_as_text_is_merged_and_quoted_text_stays_text():
    files = C.load_file(DEFAULT, SMOKE)
    cfg = C.load_file(DEFAULT, SMOKE, overrides={"grounding": "{steps: 100, lr: 1e-3}"})
    assert cfg.grounding.steps == 100 and cfg.grounding.lr == 1e-3
    assert cfg.grounding.eval_every == files.grounding.eval_every
    assert C.command_line({"run": "other", "data": {"benchmarks_dir": "{a: 1}"}}) == {
        "run": "other",
        "data": {"benchmarks_dir": "{a: 1}"},  # a quoted mapping inside a mapping stays text
    }
    with pytest.raises(C.ConfigError, match=r"grounding: expected a mapping, got '\{steps: 1'"):
        C.load_file(DEFAULT, overrides={"grounding": "{steps: 1"})
    with pytest.raises(C.ConfigError, match="distill.kl_baseline: expected true or false"):
        C.load_file(DEFAULT, overrides={"distill": {"kl_baseline": "maybe"}})


def test_check_config_takes_command_line_overrides(capsys):
    from mgsd import config_cli

    argv = [str(DEFAULT), str(SMOKE), "--config", "grounding={steps: 100}", "run=other"]
    assert config_cli.main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["grounding"]["steps"] == 100 and printed["run"] == "other"
    assert printed["grounding"]["batch_size"] == 8
    assert config_cli.main([str(DEFAULT), "--config", "grounding"]) == 1
    assert "expected KEY=VALUE" in capsys.readouterr().err


# ---------------------------------------------------------------- external models

HUB_ID = "Qwen/Qwen3-VL-4B-Instruct"


@pytest.mark.parametrize(
    ("external", "message"),
    [
        ({"mgsd": {"path": HUB_ID}}, "external_models.mgsd: the name 'mgsd' clashes with the "
         "method 'mgsd'"),
        ({"symbolic": {"path": HUB_ID}}, "the name 'symbolic' clashes with the method"),
        ({"mgsd-seed2": {"path": HUB_ID}}, "external_models.mgsd-seed2: the name 'mgsd-seed2' "
         "clashes with the method 'mgsd'"),
        ({"my model": {"path": HUB_ID}}, "external_models.my model: 'my model' is not a plain"),
        ({"qwen": {"paht": HUB_ID}}, "unknown key external_models.qwen.paht"),
        ({"qwen": {}}, "missing key external_models.qwen.path"),
        ({"qwen": {"path": HUB_ID, "prompt_style": "long"}}, "external_models.qwen.prompt_style: "
         "'long' is not one of 'compact', 'instruct'"),
        ({"qwen": {"path": HUB_ID, "conditions": ["audio"]}}, "external_models.qwen.conditions: "
         "unknown condition 'audio'"),
        ({"qwen": {"path": HUB_ID, "conditions": []}}, "external_models.qwen.conditions: give at"),
    ],
)  # fmt: skip
def test_external_model_errors_name_the_model(external, message):
    with pytest.raises(C.ConfigError, match=message):
        C.load(_raw(external_models=external))


def _model_folder(path: Path, made_by_mgsd: bool = False) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    if made_by_mgsd:
        (path / C.STAGE_FILE).write_text("{}")
    return path


def test_external_models_load_with_their_defaults(tmp_path):
    folder = _model_folder(tmp_path / "ours", made_by_mgsd=True)
    external = {
        "qwen": {"path": HUB_ID},
        "ours": {"path": str(folder), "prompt_style": "compact", "conditions": ["image"]},
    }
    cfg = C.load(_raw(external_models=external))
    C.check_inputs(cfg, tmp_path)
    assert cfg.external_models["qwen"] == C.ExternalModel(path=HUB_ID)
    assert cfg.external_models["qwen"].prompt_style == "instruct"
    assert cfg.external_models["qwen"].conditions is None  # evaluate.conditions
    assert cfg.external_models["ours"].conditions == ("image",)
    assert C.default_prompt_style(str(folder)) == "compact"
    assert C.default_prompt_style(HUB_ID) == "instruct"


@pytest.mark.parametrize(
    ("path", "style", "message"),
    [
        ("nowhere/at/all", "instruct", "external_models.x.path: nowhere/at/all does not exist"),
        ("plain_name", "instruct", "external_models.x.path: plain_name does not exist"),
        ("a_file", "instruct", "external_models.x.path: a_file is a file, not a model folder"),
        ("empty", "instruct", "external_models.x.path: empty has no config.json"),
        ("no_weights", "instruct", "external_models.x.path: no_weights has no \\*.safetensors"),
        (HUB_ID, "compact", "external_models.x.prompt_style: compact prompts are mgsd's own"),
        ("elsewhere", "compact", "elsewhere is not one: use instruct"),
    ],
)
def test_an_external_model_must_exist_and_fit_its_prompt_style(tmp_path, path, style, message):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text("{}")
    _model_folder(tmp_path / "elsewhere")
    cfg = C.load(_raw(external_models={"x": {"path": path, "prompt_style": style}}))
    with pytest.raises(C.ConfigError, match=message):
        C.check_inputs(cfg, tmp_path)


def test_models_with_a_pretrained_processor_need_torchvision(tmp_path, monkeypatch):
    """A hub backbone or external model needs torchvision (Qwen3-VL's processor imports it);
    mgsd's own folders do not. Nothing is reported when the package is there."""
    ours = _model_folder(tmp_path / "ours", made_by_mgsd=True)
    theirs = _model_folder(tmp_path / "theirs")
    external = {
        "qwen": {"path": HUB_ID},
        "ours": {"path": str(ours)},
        "theirs": {"path": str(theirs)},
    }
    cfg = C.load(
        _raw(backbone={"source": "pretrained", "pretrained": HUB_ID}, external_models=external)
    )
    monkeypatch.setattr(C, "_installed", lambda package: package != "torchvision")
    lines = C.missing_packages(cfg, tmp_path)
    assert [line.split(":")[0] for line in lines] == [
        "backbone.pretrained",
        "external_models.qwen.path",
        "external_models.theirs.path",
    ]
    assert all("needs torchvision" in line and ".[pretrained]" in line for line in lines)
    monkeypatch.setattr(C, "_installed", lambda package: True)
    assert C.missing_packages(cfg, tmp_path) == []
    scratch = C.load(_raw(external_models={"ours": {"path": str(ours)}}))
    monkeypatch.setattr(C, "_installed", lambda package: False)
    assert C.missing_packages(scratch, tmp_path) == []


def test_a_section_loaded_alone_checks_its_conditions():
    """What `mgsd evaluate --config` loads is the section alone: its conditions are checked
    there too, as in the whole config (both name the known ones)."""
    with pytest.raises(C.ConfigError) as e:
        C.load_section(C.EvaluateConfig, '{"conditions": ["image", "audio"]}', "evaluate")
    assert str(e.value) == (
        "evaluate.conditions: unknown condition 'audio' (known: image, text, image_oracle_state, "
        "teacher)"
    )
