# mgsd: puzzle datasets -> trained models -> evaluations -> tables, figures and a report.
#   snakemake --cores all all                          (the default preset, pipeline_config.yaml)
#   snakemake --cores all all --configfile presets/smoke.yaml
#   snakemake --profile slurm all                      (a Slurm cluster; see README)
#   snakemake --cores all all --config grounding='{steps: 100}'   (only grounding.steps changes)
import os

from snakemake.exceptions import WorkflowError

from mgsd.config import (
    CONDITIONS,
    ConfigError,
    check_inputs,
    load_file,
    missing_packages,
    section_json,
)
from mgsd.workflow import (
    DISTILL_SETUPS,
    PREMISE_CONDITIONS,
    REPLICATE,
    REPORT_CONFIGS,
    RL_INITS,
    SELECT_ON,
    SFT_INITS,
    SWEPT,
    SWEPT_DISTILL,
    SWEPT_RL,
    candidate_config,
    candidates,
    chosen_config,
    cpu_resources,
    data_excludes,
    data_params,
    data_file,
    data_files,
    config_arg,
    distill_setup,
    eval_files,
    eval_outputs,
    evaluated_models,
    external_inputs,
    external_outputs,
    gpu_resources,
    launcher,
    model_inputs,
    model_ref,
    one_of,
    premise_outputs,
    report_files,
    split_replicate,
    swept,
    train_logs,
)

DEFAULT_CONFIG = os.path.join(workflow.basedir, "pipeline_config.yaml")
# where --use-conda installs mgsd from (envs/mgsd.yaml: the file is used from a copy elsewhere)
os.environ.update(MGSD_SOURCE_DIR=workflow.basedir)


configfile: DEFAULT_CONFIG


# The config files in order, then the --config overrides read as YAML (mgsd.config.command_line):
# Snakemake's own `config` holds those as text ('true', 'null', '100').
_settings = workflow.config_settings
try:
    CFG = load_file(
        *([] if _settings.replace_workflow_config else [DEFAULT_CONFIG]),
        *_settings.configfiles,
        overrides=_settings.config,
    )
    check_inputs(CFG)  # relative paths are read from the working directory
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None
ROOT = str(CFG.root)


onstart:
    # a run (not a dry run) stops before any job when a model's processor cannot load here
    _missing = missing_packages(CFG)
    if _missing:
        raise WorkflowError("missing packages: " + "; ".join(_missing))


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/rl.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    """Every evaluation, table and figure of the run: the default target."""
    default_target: True
    input:
        report_files(CFG),
        eval_files(CFG),


rule data:
    """Only the datasets: every puzzle's train, val and test Parquet files."""
    input:
        data_files(CFG),


rule premise:
    """Only what the premise needs: the base model measured on the validation split."""
    input:
        premise_outputs(CFG),
