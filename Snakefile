# mgsd: puzzle datasets -> trained models -> evaluations -> tables, figures and a report.
#   snakemake --cores all all                          (the default preset, pipeline_config.yaml)
#   snakemake --cores all all --configfile presets/smoke.yaml
#   snakemake --profile slurm all                      (a Slurm cluster; see README)
import os

from snakemake.exceptions import WorkflowError

from mgsd.config import CONDITIONS, ConfigError, load, section_json
from mgsd.workflow import (
    DISTILL_SETUPS,
    cpu_resources,
    data_excludes,
    data_params,
    data_file,
    data_files,
    eval_files,
    eval_outputs,
    gpu_resources,
    launcher,
    model_inputs,
    model_ref,
    report_files,
    train_logs,
)


configfile: os.path.join(workflow.basedir, "pipeline_config.yaml")


try:
    CFG = load(config)
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
