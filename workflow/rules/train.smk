# Supervised stages (src/mgsd/train/sft.py): the scratch backbone's symbolic pretraining (its
# output is the "base" model), grounding (MGSD stage 1) and the direct-SFT baseline.


# The training log is written in the work folder and copied on success: Snakemake deletes the
# outputs of a failed job, and a job stopped by Slurm (exit 75) must resume with its log whole.
SFT_SHELL = (
    "{params.launch} train-sft --stage {params.stage} --init {params.init:q}"
    " --train {input.train:q} --val {input.val:q} --config {params.cfg:q}"
    " --prompt-style {params.style} --out {output.model:q} --metrics {output.metrics:q}"
    " --log {params.work:q}/train_log.jsonl --work {params.work:q} > {log:q} 2>&1"
    " && cp {params.work:q}/train_log.jsonl {output.log:q}"
)


rule scratch_init:
    output:
        directory(f"{ROOT}/models/scratch/model"),
    params:
        cfg=section_json(CFG.backbone.scratch),
        image_size=CFG.data.image_size,
    log:
        f"{ROOT}/logs/models/scratch_init.log",
    benchmark:
        f"{ROOT}/benchmarks/models/scratch_init.tsv"
    resources:
        **cpu_resources(CFG, "symbolic_pretrain"),
    conda:
        "../../envs/mgsd.yaml"
    shell:
        "mgsd build-scratch --config {params.cfg:q} --image-size {params.image_size}"
        " --out {output:q} > {log:q} 2>&1"


rule symbolic_pretrain:
    input:
        init=f"{ROOT}/models/scratch/model",
        train=[data_file(CFG, p, "train") for p in CFG.data.puzzles],
        val=[data_file(CFG, p, "val") for p in CFG.data.puzzles],
    output:
        model=directory(f"{ROOT}/models/base/model"),
        metrics=f"{ROOT}/models/base/metrics.json",
        log=f"{ROOT}/models/base/train_log.jsonl",
    params:
        stage="symbolic_pretrain",
        cfg=section_json(CFG.symbolic_pretrain),
        style=CFG.backbone.prompt_style,
        work=f"{ROOT}/resume/base",
        launch=launcher(CFG, "symbolic_pretrain"),
    log:
        f"{ROOT}/logs/models/base.log",
    benchmark:
        f"{ROOT}/benchmarks/models/base.tsv"
    resources:
        **gpu_resources(CFG, "symbolic_pretrain"),
    conda:
        "../../envs/mgsd.yaml"
    shell:
        SFT_SHELL.replace("{params.init:q}", "{input.init:q}")


rule grounding:
    input:
        init=model_inputs(CFG, "base"),
        train=[data_file(CFG, p, "train") for p in CFG.data.puzzles],
        val=[data_file(CFG, p, "val") for p in CFG.data.puzzles],
    output:
        model=directory(f"{ROOT}/models/grounding/model"),
        metrics=f"{ROOT}/models/grounding/metrics.json",
        log=f"{ROOT}/models/grounding/train_log.jsonl",
    params:
        stage="grounding",
        cfg=section_json(CFG.grounding),
        init=lambda wc: model_ref(CFG, "base"),
        style=CFG.backbone.prompt_style,
        work=f"{ROOT}/resume/grounding",
        launch=launcher(CFG, "grounding"),
    log:
        f"{ROOT}/logs/models/grounding.log",
    benchmark:
        f"{ROOT}/benchmarks/models/grounding.tsv"
    resources:
        **gpu_resources(CFG, "grounding"),
    conda:
        "../../envs/mgsd.yaml"
    shell:
        SFT_SHELL


rule sft_direct:
    input:
        init=model_inputs(CFG, "base"),
        train=[data_file(CFG, p, "train") for p in CFG.data.puzzles],
        val=[data_file(CFG, p, "val") for p in CFG.data.puzzles],
    output:
        model=directory(f"{ROOT}/models/sft_direct/model"),
        metrics=f"{ROOT}/models/sft_direct/metrics.json",
        log=f"{ROOT}/models/sft_direct/train_log.jsonl",
    params:
        stage="sft_direct",
        cfg=section_json(CFG.sft_direct),
        init=lambda wc: model_ref(CFG, "base"),
        style=CFG.backbone.prompt_style,
        work=f"{ROOT}/resume/sft_direct",
        launch=launcher(CFG, "sft_direct"),
    log:
        f"{ROOT}/logs/models/sft_direct.log",
    benchmark:
        f"{ROOT}/benchmarks/models/sft_direct.tsv"
    resources:
        **gpu_resources(CFG, "sft_direct"),
    conda:
        "../../envs/mgsd.yaml"
    shell:
        SFT_SHELL
