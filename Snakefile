# mgsd: puzzle datasets -> trained models -> evaluations -> tables, figures and a report.
#   snakemake --cores all all                          (the default preset, pipeline_config.yaml)
#   snakemake --cores all all --configfile presets/smoke.yaml
#   snakemake --profile slurm all                      (a Slurm cluster; see README)
import os

from snakemake.exceptions import WorkflowError

from mgsd.config import CONDITIONS, ConfigError, check_inputs, load, section_json
from mgsd.workflow import (
    DISTILL_SETUPS,
    PREMISE_CONDITIONS,
    REPLICATE,
    SELECT_ON,
    SFT_INITS,
    SWEPT_DISTILL,
    candidate_config,
    candidates,
    chosen_distill_config,
    cpu_resources,
    data_excludes,
    data_params,
    data_file,
    data_files,
    distill_config_arg,
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


configfile: os.path.join(workflow.basedir, "pipeline_config.yaml")


try:
    CFG = load(config)
    check_inputs(CFG)  # relative paths are read from the working directory
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None
ROOT = str(CFG.root)


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        report_files(CFG),
        eval_files(CFG),


rule data:
    input:
        data_files(CFG),


rule premise:
    input:
        premise_outputs(CFG),
